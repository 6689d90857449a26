"""Kill switches over real HTTP: every kind, read-only, operator-only, audited, persistent,
seen by another worker within a second, holding approved actions, and the CLI."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.serve import build_apps
from gateway.switches.targets import check_target
from tests.support.approvals import Tool, approval_config, approver_headers
from tests.support.audit import wait_for_records
from tests.support.gateway import OTHER_TOKEN, auth
from tests.support.process import approver_cli

OPERATOR = approver_headers("olga")


async def start(start_upstream: Any, start_gateway: Any, tmp_path: Any) -> tuple[Any, Tool]:
    tool = Tool()
    gw = await start_gateway(config=approval_config(tmp_path, await start_upstream(tool.app())))
    return gw, tool


async def engage(gw: Any, target: str, reason: str = "incident 42", headers: Any = None):
    resp = await gw.admin.put(
        f"/api/v1/switches/{quote(target, safe='')}",
        headers=OPERATOR if headers is None else headers,
        json={"reason": reason},
    )
    return resp.status, await resp.json()


async def lift(gw: Any, target: str) -> int:
    resp = await gw.admin.delete(f"/api/v1/switches/{quote(target, safe='')}", headers=OPERATOR)
    return resp.status


@pytest.mark.parametrize(
    ("target", "stopped", "passes"),
    [
        ("all", [("bot", "GET"), ("other", "GET")], []),
        ("agent:bot", [("bot", "GET")], [("other", "GET")]),
        ("tool:echo", [("bot", "GET"), ("other", "GET")], []),
        ("agent:bot,tool:echo", [("bot", "GET")], [("other", "GET")]),
        ("read-only", [("bot", "POST"), ("bot", "DELETE")], [("bot", "GET"), ("bot", "OPTIONS")]),
    ],
    ids=["all", "agent", "tool", "agent-and-tool", "read-only"],
)
async def test_each_switch_kind(tmp_path, start_upstream, start_gateway, target, stopped, passes):
    gw, _tool = await start(start_upstream, start_gateway, tmp_path)
    tokens = {"bot": auth(), "other": auth(OTHER_TOKEN)}
    assert (await engage(gw, target))[0] == 200
    for agent, method in stopped:
        resp = await gw.request(method, "/tools/echo/items/x", headers=tokens[agent])
        body = await resp.json()
        assert resp.status == 403, (agent, method)
        assert body["error"]["code"] == "switched_off"
        assert target in body["error"]["message"] and "incident 42" in body["error"]["message"]
    for agent, method in passes:
        resp = await gw.request(method, "/tools/echo/items/x", headers=tokens[agent])
        assert resp.status != 403 or (await resp.json())["error"]["code"] != "switched_off"
    assert await lift(gw, target) == 200
    resp = await gw.request(stopped[0][1], "/tools/echo/items/x", headers=tokens[stopped[0][0]])
    assert resp.status != 403 or (await resp.json())["error"]["code"] != "switched_off"


async def test_only_operators_engage_and_targets_are_checked(
    tmp_path, start_upstream, start_gateway
):
    gw, _ = await start(start_upstream, start_gateway, tmp_path)
    assert (await engage(gw, "all", headers=approver_headers("alice")))[0] == 403
    assert (await engage(gw, "all", headers=auth()))[0] == 401
    for bad in ("everything", "agent:ghost", "tool:nope", "agent:bot,tool:nope"):
        status, body = await engage(gw, bad)
        assert (status, body["error"]["code"]) == (400, "bad_request"), bad
    resp = await gw.admin.put("/api/v1/switches/all", headers=OPERATOR, json={"reason": " "})
    assert resp.status == 400
    assert await lift(gw, "all") == 404
    listed = await gw.admin.get("/api/v1/switches", headers=approver_headers("alice"))
    assert (listed.status, await listed.json()) == (200, {"switches": []})


async def test_a_switch_for_an_agent_no_longer_configured_can_be_lifted(
    tmp_path, start_upstream, start_gateway
):
    tool = Tool()
    config = approval_config(tmp_path, await start_upstream(tool.app()))
    before = await start_gateway(config=config)
    assert (await engage(before, "agent:other,tool:echo"))[0] == 200
    # The agent is then removed from the config; the switch stays in the store.
    after = await start_gateway(
        config=config.model_copy(
            update={"agents": tuple(a for a in config.agents if a.id != "other")}
        )
    )
    status, body = await engage(after, "agent:other")
    assert (status, body["error"]["code"]) == (400, "bad_request")  # engaging still checks
    assert await lift(after, "agent:other,tool:echo") == 200
    assert await lift(after, "agent:other,tool:echo") == 404
    resp = await after.admin.delete("/api/v1/switches/everything", headers=OPERATOR)
    assert resp.status == 400  # a malformed target is still refused


async def test_changes_are_audited_with_who_and_why(tmp_path, start_upstream, start_gateway):
    gw, _ = await start(start_upstream, start_gateway, tmp_path)
    await engage(gw, "tool:echo", "upstream is double-charging")
    await lift(gw, "tool:echo")
    records = await wait_for_records(
        gw.services.audit.path, lambda rs: sum(r["kind"] == "switch" for r in rs) == 2
    )
    switches = [r for r in records if r["kind"] == "switch"]
    assert [(r["target"], r["engaged"], r["by"], r["reason"]) for r in switches] == [
        ("tool:echo", True, "olga", "upstream is double-charging"),
        ("tool:echo", False, "olga", ""),
    ]


async def test_switches_persist_and_reach_another_worker_within_a_second(tmp_path, start_upstream):
    tool = Tool()
    config = approval_config(tmp_path, await start_upstream(tool.app()))
    clients: list[TestClient] = []

    async def worker() -> tuple[TestClient, TestClient]:
        agent_app, admin_app = build_apps(config)
        pair = (
            TestClient(TestServer(agent_app, host="127.0.0.1")),
            TestClient(TestServer(admin_app, host="127.0.0.1")),
        )
        for client in pair:
            await client.start_server()
            clients.append(client)
        return pair

    try:
        _agent_a, admin_a = await worker()
        agent_b, _admin_b = await worker()
        resp = await admin_a.put(
            "/api/v1/switches/agent:bot", headers=OPERATOR, json={"reason": "runaway"}
        )
        assert resp.status == 200
        await asyncio.sleep(1.2)
        resp = await agent_b.get("/tools/echo/x", headers=auth())
        assert resp.status == 403
        for client in clients:
            await client.close()
        clients.clear()
        agent_c, _admin_c = await worker()  # a restart keeps it
        resp = await agent_c.get("/tools/echo/x", headers=auth())
        assert (await resp.json())["error"]["code"] == "switched_off"
    finally:
        for client in clients:
            await client.close()
    assert tool.calls == []


async def test_an_approved_action_waits_for_its_switch_to_lift(
    tmp_path, start_upstream, start_gateway
):
    gw, tool = await start(start_upstream, start_gateway, tmp_path)
    resp = await gw.post("/tools/echo/refunds", headers=auth(), json={"amount": 5})
    action_id = (await resp.json())["action_id"]
    await engage(gw, "tool:echo", "freeze")
    resp = await gw.admin.post(
        f"/api/v1/actions/{action_id}/approve", headers=approver_headers("alice"), json={}
    )
    action = await resp.json()
    assert action["state"] == "approved"
    assert action["blocked_by"] == {"target": "tool:echo", "reason": "freeze"}
    await asyncio.sleep(1.5)
    assert tool.calls == []
    await lift(gw, "tool:echo")
    async with asyncio.timeout(10):
        while (await gw.services.actions.get(action_id)).state != "succeeded":
            await asyncio.sleep(0.1)
    assert len(tool.calls) == 1


async def test_the_switch_command(tmp_path, start_upstream, start_gateway):
    gw, _ = await start(start_upstream, start_gateway, tmp_path)
    admin = str(gw.admin.make_url("")).rstrip("/")

    async def callgate(*args: str) -> tuple[int, str, str]:
        return await approver_cli("switch", *args, "--url", admin, token="olga-approver-token")

    assert await callgate("off", "agent:bot,tool:echo", "--reason", "loop") == (
        0,
        "off: agent:bot,tool:echo (loop)\n",
        "",
    )
    code, out, _ = await callgate("list")
    assert code == 0 and out.startswith("agent:bot,tool:echo  by olga at ")
    assert (await gw.get("/tools/echo/x", headers=auth())).status == 403
    assert await callgate("on", "agent:bot,tool:echo") == (0, "on: agent:bot,tool:echo\n", "")
    code, _, err = await callgate("off", "agent:ghost", "--reason", "x")
    assert code == 1 and "no agent 'ghost'" in err


@pytest.mark.parametrize("target", ["all\n", "read-only\n", "agent:bot\n", "tool:echo\n"])
def test_a_target_with_a_trailing_newline_is_refused(target: str) -> None:
    """`$` matches before a final newline: `all\\n` was engaged and stopped nothing."""
    with pytest.raises(ValueError, match="a switch target is"):
        check_target(target)
