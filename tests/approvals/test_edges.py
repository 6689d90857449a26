"""Approvals at their edges: holds across the execution, retries that differ only in
incidental headers, a second worker starting mid-execution, an audit outage at execution
time, oversized answers, and agent text that tries to pass for something else."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from gateway.config import Webhook
from gateway.serve import build_apps
from tests.support.approvals import Receiver, Tool, approval_config, approver_headers, log_in
from tests.support.gateway import auth


async def start(start_upstream: Any, start_gateway: Any, tmp_path: Any, tool: Tool, **kw: Any):
    url = await start_upstream(tool.app())
    return await start_gateway(config=approval_config(tmp_path, url, **kw))


async def first_pending(gw: Any) -> str:
    async with asyncio.timeout(5):
        while not (pending := await gw.services.actions.find(state="pending")):
            await asyncio.sleep(0.02)
    return pending[0].id


async def approve(gw: Any, action_id: str, who: str = "alice") -> dict[str, Any]:
    resp = await gw.admin.post(
        f"/api/v1/actions/{action_id}/approve", headers=approver_headers(who), json={}
    )
    return dict(await resp.json())


async def test_a_hold_covers_the_execution_it_was_approved_into(
    tmp_path, start_upstream, start_gateway
):
    tool = Tool(delay_s=1.5)  # slower than the hold itself
    gw = await start(start_upstream, start_gateway, tmp_path, tool)
    held = asyncio.create_task(
        gw.post("/tools/echo/refunds", headers={**auth(), "Prefer": "wait=1"}, json={})
    )
    approving = asyncio.create_task(approve(gw, await first_pending(gw)))
    resp = await held
    assert resp.status == 201  # not a 202 saying nothing has happened
    assert (await approving)["state"] == "succeeded"
    assert len(tool.calls) == 1


async def test_a_retry_may_change_incidental_headers(tmp_path, start_upstream, start_gateway):
    gw = await start(start_upstream, start_gateway, tmp_path, Tool())
    ids = set()
    for extra in (
        {},
        {"Prefer": "wait=0"},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        {"User-Agent": "agent/2.0"},
    ):
        resp = await gw.post(
            "/tools/echo/refunds",
            headers={**auth(), "Idempotency-Key": "k-1", **extra},
            json={"amount": 5},
        )
        assert resp.status == 202, await resp.text()
        ids.add((await resp.json())["action_id"])
    assert len(ids) == 1
    changed = await gw.post(
        "/tools/echo/refunds",
        headers={**auth(), "Idempotency-Key": "k-1", "X-Currency": "USD"},
        json={"amount": 5},
    )
    assert changed.status == 422


async def test_a_second_worker_leaves_a_running_execution_alone(tmp_path, start_upstream):
    tool = Tool(delay_s=1)
    config = approval_config(tmp_path, await start_upstream(tool.app()))
    clients: list[TestClient] = []

    async def worker() -> tuple[TestClient, TestClient]:
        agent_app, admin_app = build_apps(config)
        agent = TestClient(TestServer(agent_app, host="127.0.0.1"))
        admin = TestClient(TestServer(admin_app, host="127.0.0.1"))
        await agent.start_server()
        await admin.start_server()
        clients.extend([admin, agent])
        return agent, admin

    try:
        agent, admin = await worker()
        resp = await agent.post("/tools/echo/refunds", headers=auth(), json={})
        action_id = (await resp.json())["action_id"]
        approving = asyncio.create_task(
            admin.post(
                f"/api/v1/actions/{action_id}/approve", headers=approver_headers("bob"), json={}
            )
        )
        async with asyncio.timeout(5):
            await tool.reached.wait()
        _agent2, admin2 = await worker()  # starts, and sweeps, while the call runs
        final = await (await approving).json()
        assert final["state"] == "succeeded"
        shown = await admin2.get(f"/api/v1/actions/{action_id}", headers=approver_headers("bob"))
        assert (await shown.json())["state"] == "succeeded"
        assert len(tool.calls) == 1
    finally:
        for client in clients:
            await client.close()


async def test_an_audit_outage_at_execution_sends_nothing_and_retries(
    tmp_path, start_upstream, start_gateway
):
    tool = Tool()
    gw = await start(start_upstream, start_gateway, tmp_path, tool)
    resp = await gw.post("/tools/echo/refunds", headers=auth(), json={})
    action_id = (await resp.json())["action_id"]
    blocker = sqlite3.connect(gw.services.audit.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        action = await approve(gw, action_id)
        assert action["state"] == "approved"  # not failed: nothing was sent
        assert "audit log" in action["not_sent"]
        assert tool.calls == []
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    async with asyncio.timeout(15):
        while (await gw.services.actions.get(action_id)).state != "succeeded":
            await asyncio.sleep(0.1)
    assert len(tool.calls) == 1


async def test_an_answer_too_large_to_keep_is_not_passed_off_as_whole(
    tmp_path, start_upstream, start_gateway
):
    tool = Tool()
    gw = await start(start_upstream, start_gateway, tmp_path, tool, max_result_bytes=8)
    held = asyncio.create_task(
        gw.post("/tools/echo/refunds", headers={**auth(), "Prefer": "wait=10"}, json={})
    )
    action = await approve(gw, await first_pending(gw))
    assert action["result"]["truncated"] is True
    assert action["result"]["size"] == 8
    resp = await held
    body = await resp.json()
    assert resp.status == 409
    assert "larger than this gateway keeps" in body["error"]["message"]
    assert body["error"]["retryable"] is False


async def test_bidi_and_slack_markup_in_agent_text_stay_visible_as_such(
    tmp_path, start_upstream, start_gateway
):
    receiver = Receiver()
    hook_url = await start_upstream(receiver.app()) + "/hook"
    gw = await start(
        start_upstream,
        start_gateway,
        tmp_path,
        Tool(),
        webhooks=(Webhook(url=hook_url, secret="s"),),  # type: ignore[arg-type]
    )
    resp = await gw.post(
        "/tools/echo/refunds/%3C!channel%3E%20%3Cmailto:x@evil.example%7CApproved%3E",
        headers=auth(),
        json={"amount": "\u202e0001"},
    )
    action_id = (await resp.json())["action_id"]
    async with asyncio.timeout(10):
        await receiver.taken.wait()
    text = json.loads(receiver.deliveries[0][1])["text"]
    assert "<" not in text and ">" not in text
    assert "%3C!channel%3E" in text
    await log_in(gw.admin)
    page = await (await gw.admin.get(f"/ui/actions/{action_id}")).text()
    assert "\u202e" not in page
    assert "\\u202e0001" in page


async def test_an_approvers_body_is_read_under_the_agents_rules(
    tmp_path, start_upstream, start_gateway
):
    """A deep or doubly-keyed comment is a 400, never a 500 from the parser's recursion."""
    gw = await start(start_upstream, start_gateway, tmp_path, Tool())
    parked = await gw.post("/tools/echo/refunds", headers=auth(), json={})
    assert parked.status == 202
    action_id = await first_pending(gw)
    for body in (b"[" * 20_000 + b"]" * 20_000, b'{"comment": "a", "comment": "b"}'):
        resp = await gw.admin.post(
            f"/api/v1/actions/{action_id}/approve",
            headers={**approver_headers("alice"), "Content-Type": "application/json"},
            data=body,
        )
        assert resp.status == 400, await resp.text()
        assert (await resp.json())["error"]["code"] == "bad_request"
