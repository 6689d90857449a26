"""Approvals over real HTTP: park, hold, approve, deny, expire, four-eyes, roles, races,
restarts and idempotent retries (docs/approvals.md)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.serve import build_apps
from tests.support.approvals import Tool, approval_config, approver_headers
from tests.support.audit import wait_for_records
from tests.support.gateway import OTHER_TOKEN, auth

# Each test runs on a SQLite store and on a PostgreSQL one.
pytestmark = pytest.mark.usefixtures("store_url")


async def start(start_upstream: Any, start_gateway: Any, tmp_path: Any, tool: Tool, **kw: Any):
    url = await start_upstream(tool.app())
    return await start_gateway(config=approval_config(tmp_path, url, **kw))


async def park(gw: Any, path: str = "/refunds", **headers: str) -> dict[str, Any]:
    resp = await gw.post(f"/tools/echo{path}", headers={**auth(), **headers}, json={"amount": 5})
    body = await resp.json()
    assert resp.status == 202, body
    assert resp.headers["Location"] == f"/actions/{body['action_id']}"
    assert resp.headers["X-Request-Id"]
    return dict(body)


async def verdict(gw: Any, action_id: str, who: str, what: str = "approve", comment: str = ""):
    resp = await gw.admin.post(
        f"/api/v1/actions/{action_id}/{what}",
        headers=approver_headers(who),
        json={"comment": comment},
    )
    return resp.status, await resp.json()


async def test_a_parked_call_is_202_and_nothing_is_sent(tmp_path, start_upstream, start_gateway):
    tool = Tool()
    gw = await start(start_upstream, start_gateway, tmp_path, tool)
    body = await park(gw)
    assert body["status"] == "pending_approval"
    assert body["poll"] == f"/actions/{body['action_id']}"
    assert "NOT been executed" in body["message"]
    assert tool.calls == []
    resp = await gw.get(body["poll"], headers=auth())
    action = await resp.json()
    assert resp.status == 200
    assert action["state"] == "pending"
    assert action["agent"] == "bot" and action["tool"] == "echo"
    assert action["request"]["method"] == "POST"
    assert action["request"]["body"] == {"amount": 5}
    assert action["decision"]["reason"] == "refunds need finance"
    assert action["decision"]["tags"] == {"risk": "high"}
    assert 0 < action["time_left_s"] <= 3600
    # Credentials are never stored: the agent's token is not among the headers.
    assert all(name.lower() != "authorization" for name, _ in action["request"]["headers"])


async def test_approval_executes_once_and_the_agent_sees_the_result(
    tmp_path, start_upstream, start_gateway
):
    tool = Tool()
    gw = await start(start_upstream, start_gateway, tmp_path, tool)
    body = await park(gw, "/refunds?order=7")
    status, action = await verdict(gw, body["action_id"], "alice", comment="ok, small amount")
    assert status == 200, action
    assert action["state"] == "succeeded"
    assert action["result"]["status"] == 201
    assert action["approvals"][0]["approver"] == "alice"
    assert action["approvals"][0]["comment"] == "ok, small amount"
    assert tool.calls == [("POST", "/refunds?order=7", b'{"amount": 5}')]
    polled = await (await gw.get(body["poll"], headers=auth())).json()
    assert polled["state"] == "succeeded"
    assert polled["result"]["status"] == 201
    assert polled["result"]["body"].startswith('{"done": 1')
    records = await wait_for_records(
        gw.services.audit.path, lambda rs: any(r.get("to_state") == "succeeded" for r in rs)
    )
    mine = [r for r in records if r.get("action_id") == body["action_id"]]
    kinds = [(r["kind"], r.get("to_state")) for r in mine]
    assert kinds == [
        ("action", "pending"),
        ("decision", None),
        ("action", "approved"),
        ("action", "executing"),
        ("intent", None),
        ("outcome", None),
        ("action", "succeeded"),
    ]
    decision = next(r for r in mine if r["kind"] == "decision")
    assert (decision["decision"], decision["status"]) == ("approval_required", 202)


async def test_an_executed_action_leaves_its_intent_and_outcome_with_its_action_id(
    tmp_path, start_upstream, start_gateway
):
    tool = Tool()
    gw = await start(start_upstream, start_gateway, tmp_path, tool)
    body = await park(gw, "/refunds?order=7", **{"X-Agent-Model": "m-1", "X-Agent-Session": "s-1"})
    status, _ = await verdict(gw, body["action_id"], "alice")
    assert status == 200
    action_id = body["action_id"]
    records = await wait_for_records(
        gw.services.audit.path,
        lambda rs: any(r["kind"] == "outcome" and r.get("action_id") == action_id for r in rs),
    )
    parked = next(r for r in records if r["kind"] == "decision" and r["action_id"] == action_id)
    call = {
        "request_id": parked["request_id"],
        "trace_id": parked["trace_id"],  # the execution continues the parked call's trace
        "action_id": action_id,
        "agent": "bot",
        "model": "m-1",
        "session": "s-1",
        "tool": "echo",
        "method": "POST",
        "path": "/refunds",
    }
    intent, outcome = (
        next(r for r in records if r["kind"] == kind and r.get("action_id") == action_id)
        for kind in ("intent", "outcome")
    )
    # Every field but when it was written (`time`) and its place in the log (`seq`).
    assert {k: v for k, v in intent.items() if k not in ("time", "seq")} == {
        "kind": "intent",
        **call,
        "upstream": gw.services.tools["echo"].upstream,
    }
    assert {k: v for k, v in outcome.items() if k not in ("time", "seq")} == {
        "kind": "outcome",
        **call,
        "status": 201,
        "upstream_status": 201,
        "error": None,
        "bytes": outcome["bytes"],
    }
    assert outcome["bytes"] > 0


async def test_prefer_wait_returns_the_tools_answer_when_approved_in_time(
    tmp_path, start_upstream, start_gateway
):
    tool = Tool()
    gw = await start(start_upstream, start_gateway, tmp_path, tool)
    held = asyncio.create_task(
        gw.post(
            "/tools/echo/refunds",
            headers={**auth(), "Prefer": "wait=10"},
            json={"amount": 5},
        )
    )
    async with asyncio.timeout(5):
        while not (pending := await gw.services.actions.find(state="pending")):
            await asyncio.sleep(0.02)
    status, _ = await verdict(gw, pending[0].id, "bob")
    assert status == 200
    resp = await held
    assert resp.status == 201  # as if the call had simply been slow
    assert resp.headers["X-Tool"] == "refunds"
    assert (await resp.json())["done"] == 1
    assert len(tool.calls) == 1


async def test_prefer_wait_gives_202_when_nobody_decides_in_time(
    tmp_path, start_upstream, start_gateway
):
    tool = Tool()
    gw = await start(start_upstream, start_gateway, tmp_path, tool, max_wait_s=0.3)
    resp = await gw.post(
        "/tools/echo/refunds", headers={**auth(), "Prefer": "wait=30"}, json={"amount": 5}
    )
    assert resp.status == 202  # the cap (0.3 s), not the 30 s asked for
    assert tool.calls == []


async def test_a_denied_action_is_never_sent(tmp_path, start_upstream, start_gateway):
    tool = Tool()
    gw = await start(start_upstream, start_gateway, tmp_path, tool)
    body = await park(gw)
    for blank in ("", "  \n "):
        status, refused = await verdict(gw, body["action_id"], "alice", "deny", blank)
        assert (status, refused["error"]["code"]) == (400, "bad_request")
        assert "a comment is required to deny" in refused["error"]["message"]
    assert (await gw.services.actions.get(body["action_id"])).state == "pending"
    status, action = await verdict(gw, body["action_id"], "alice", "deny", "too much")
    assert (status, action["state"]) == (200, "denied")
    status, again = await verdict(gw, body["action_id"], "bob")
    assert (status, again["error"]["code"]) == (409, "conflict")
    assert tool.calls == []


async def test_pending_actions_expire_even_if_nobody_looks(tmp_path, start_upstream, start_gateway):
    tool = Tool()
    gw = await start(start_upstream, start_gateway, tmp_path, tool)
    body = await park(gw, "/quick")
    async with asyncio.timeout(10):
        while (await gw.services.actions.get(body["action_id"])).state != "expired":
            await asyncio.sleep(0.1)
    status, late = await verdict(gw, body["action_id"], "alice")
    assert (status, late["error"]["code"]) == (409, "conflict")
    assert tool.calls == []


async def test_four_eyes_needs_two_distinct_approvers(tmp_path, start_upstream, start_gateway):
    tool = Tool()
    gw = await start(start_upstream, start_gateway, tmp_path, tool)
    body = await park(gw, "/transfers")
    status, first = await verdict(gw, body["action_id"], "carol")
    assert (status, first["state"]) == (200, "pending")
    status, twice = await verdict(gw, body["action_id"], "carol")
    assert (status, twice["error"]["code"]) == (409, "conflict")
    assert tool.calls == []
    status, second = await verdict(gw, body["action_id"], "alice")
    assert (status, second["state"]) == (200, "succeeded")
    assert [a["approver"] for a in second["approvals"]] == ["carol", "alice"]
    assert len(tool.calls) == 1


async def test_only_the_decisions_roles_may_decide(tmp_path, start_upstream, start_gateway):
    tool = Tool()
    gw = await start(start_upstream, start_gateway, tmp_path, tool)
    body = await park(gw)
    status, refused = await verdict(gw, body["action_id"], "carol")  # ops, not finance
    assert (status, refused["error"]["code"]) == (403, "forbidden")
    assert "finance" in refused["error"]["message"]
    state = (await gw.services.actions.get(body["action_id"])).state
    assert state == "pending"


async def test_agents_cannot_use_the_admin_api(tmp_path, start_upstream, start_gateway):
    tool = Tool()
    gw = await start(start_upstream, start_gateway, tmp_path, tool)
    body = await park(gw)
    for headers in (auth(), {}, {"Authorization": "Bearer nobody"}):
        resp = await gw.admin.post(
            f"/api/v1/actions/{body['action_id']}/approve", headers=headers, json={}
        )
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "unauthenticated"
        listed = await gw.admin.get("/api/v1/actions", headers=headers)
        assert listed.status == 401
    # And the agent listener has no approve endpoint at all.
    resp = await gw.post(f"/actions/{body['action_id']}/approve", headers=auth())
    assert resp.status in (404, 405)
    assert tool.calls == []


async def test_only_the_agent_that_made_the_call_sees_its_action(
    tmp_path, start_upstream, start_gateway
):
    tool = Tool()
    gw = await start(start_upstream, start_gateway, tmp_path, tool)
    body = await park(gw)
    other = await gw.get(body["poll"], headers=auth(OTHER_TOKEN))
    assert (other.status, (await other.json())["error"]["code"]) == (404, "not_found")
    stranger = await gw.get(body["poll"])
    assert stranger.status == 401


async def test_two_concurrent_approvals_execute_exactly_once(
    tmp_path, start_upstream, start_gateway
):
    tool = Tool(delay_s=0.2)
    gw = await start(start_upstream, start_gateway, tmp_path, tool)
    body = await park(gw)
    results = await asyncio.gather(
        verdict(gw, body["action_id"], "alice"), verdict(gw, body["action_id"], "bob")
    )
    statuses = sorted(status for status, _ in results)
    assert statuses == [200, 409]
    assert len(tool.calls) == 1
    final = await gw.services.actions.get(body["action_id"])
    assert final.state == "succeeded"
    assert len(final.document["approvals"]) == 1


async def test_a_retry_with_the_same_idempotency_key_finds_the_same_action(
    tmp_path, start_upstream, start_gateway
):
    tool = Tool()
    gw = await start(start_upstream, start_gateway, tmp_path, tool)
    first = await park(gw, **{"Idempotency-Key": "refund-7"})
    again = await park(gw, **{"Idempotency-Key": "refund-7"})
    assert again["action_id"] == first["action_id"]
    assert len(await gw.services.actions.find()) == 1
    other = await gw.post(
        "/tools/echo/refunds",
        headers={**auth(), "Idempotency-Key": "refund-7"},
        json={"amount": 500},
    )
    assert other.status == 422
    assert (await other.json())["error"]["code"] == "idempotency_key_reused"
    fresh = await park(gw, **{"Idempotency-Key": "refund-8"})
    assert fresh["action_id"] != first["action_id"]


async def test_a_pending_action_survives_a_restart(tmp_path, start_upstream):
    tool = Tool()
    config = approval_config(tmp_path, await start_upstream(tool.app()))

    async def gateway() -> tuple[TestClient, TestClient]:
        agent_app, admin_app = build_apps(config)
        agent = TestClient(TestServer(agent_app, host="127.0.0.1"))
        admin = TestClient(TestServer(admin_app, host="127.0.0.1"))
        await agent.start_server()
        await admin.start_server()
        return agent, admin

    agent, admin = await gateway()
    resp = await agent.post("/tools/echo/refunds", headers=auth(), json={"amount": 5})
    action_id = (await resp.json())["action_id"]
    await admin.close()
    await agent.close()

    agent, admin = await gateway()
    try:
        listed = await admin.get("/api/v1/actions?status=pending", headers=approver_headers("bob"))
        assert [a["id"] for a in (await listed.json())["actions"]] == [action_id]
        resp = await admin.post(
            f"/api/v1/actions/{action_id}/approve", headers=approver_headers("bob"), json={}
        )
        assert (await resp.json())["state"] == "succeeded"
        assert len(tool.calls) == 1
    finally:
        await admin.close()
        await agent.close()


async def test_listing_filters_and_validates(tmp_path, start_upstream, start_gateway):
    tool = Tool()
    gw = await start(start_upstream, start_gateway, tmp_path, tool)
    first = await park(gw)
    second = await park(gw, "/transfers")
    headers = approver_headers("alice")

    async def ids(query: str) -> list[str]:
        resp = await gw.admin.get(f"/api/v1/actions{query}", headers=headers)
        assert resp.status == 200
        return [a["id"] for a in (await resp.json())["actions"]]

    assert await ids("") == [second["action_id"], first["action_id"]]
    assert await ids("?status=pending&tool=echo&agent=bot") == [
        second["action_id"],
        first["action_id"],
    ]
    assert await ids("?agent=other") == []
    bad = await gw.admin.get("/api/v1/actions?status=maybe", headers=headers)
    assert (bad.status, (await bad.json())["error"]["code"]) == (400, "bad_request")
    missing = await gw.admin.get("/api/v1/actions/nope", headers=headers)
    assert missing.status == 404
