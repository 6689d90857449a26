"""Pinned MCP tool definitions through the real MCP SDK server, both protocol eras: a
server that changes a tool's description between two list calls has that tool held (gone
from tools/list, its tools/call refused) until an operator accepts the change
(docs/answers-and-pins.md, "Pinned MCP tools")."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.mcp.pins import definition, digest_of
from tests.support.approvals import CSRF, approver_headers, log_in
from tests.support.audit import audit_source, wait_for_records
from tests.support.mcp import mcp_config
from tests.support.mcp_sdk import SERVERS, client, sdk_server
from tests.support.mcp_sdk_server import POISONED
from tests.support.process import approver_cli

ALLOW_CALLERS = """package gateway

import rego.v1

default decision := {"allow": false, "reason": "not a caller"}

decision := {"allow": true, "reason": "caller"} if "caller" in input.agent.roles
"""


def gateway_config(tmp_path: Path, upstream: str, **tool: Any):
    config = mcp_config(tmp_path, upstream, **tool)
    (config.policy.path / "gateway.rego").write_text(ALLOW_CALLERS)
    return config


async def names(mcp: Any) -> list[str]:
    return sorted(t.name for t in (await mcp.list_tools()).tools)


async def changes(gw: Any) -> list[dict[str, Any]]:
    resp = await gw.admin.get("/api/v1/tools/mcp/changes", headers=approver_headers("alice"))
    assert resp.status == 200
    return (await resp.json())["changes"]


async def verdict(gw: Any, name: str, verb: str, digest: str, who: str = "olga") -> Any:
    return await gw.admin.post(
        f"/api/v1/tools/mcp/changes/{name}/{verb}",
        headers=approver_headers(who),
        json={"digest": digest, "comment": "read the new description"},
    )


@pytest.mark.parametrize("server", list(SERVERS))
async def test_a_changed_tool_is_held_until_an_operator_accepts_it(tmp_path, start_gateway, server):
    flags, mode, _ = SERVERS[server]
    trigger = tmp_path / "rug-pull"
    async with sdk_server([*flags, "--rug-pull", str(trigger)]) as upstream:
        gw = await start_gateway(config=gateway_config(tmp_path, upstream))
        async with client(str(gw.make_url("/tools/mcp")), mode) as mcp:
            assert await names(mcp) == ["add", "refund", "slow"]  # pinned as first seen
            assert (await mcp.call_tool("add", {"a": 1, "b": 2})).structured_content == {
                "result": 3.0
            }

            trigger.touch()  # the server now describes `add` otherwise
            assert await names(mcp) == ["refund", "slow"]
            held = await mcp.call_tool("add", {"a": 1, "b": 2})
            assert held.is_error is True
            error = json.loads(held.content[0].text)["error"]
            assert error["code"] == "tool_changed"
            assert "awaits an operator's review" in error["message"]

            [change] = await changes(gw)
            assert (change["name"], change["status"]) == ("add", "changed")
            assert change["seen"]["definition"]["description"] == POISONED
            assert change["pinned"]["definition"]["description"] == "Add two numbers."
            assert f'+  "description": {json.dumps(POISONED)}' in change["diff"]
            digest = change["seen"]["digest"]
            counted = gw.services.metrics.registry.get_sample_value(
                "callgate_mcp_tool_changes_total", {"tool": "mcp"}
            )
            assert counted == 1

            refused = await verdict(gw, "add", "accept", digest, who="alice")
            assert refused.status == 403  # accepting needs the operator role
            stale = await verdict(gw, "add", "accept", "0" * 64)
            assert stale.status == 409  # not the definition the server presents

            assert (await verdict(gw, "add", "reject", digest)).status == 200
            assert await names(mcp) == ["refund", "slow"]  # rejected: still held
            [change] = await changes(gw)
            assert change["status"] == "rejected"

            accepted = await verdict(gw, "add", "accept", digest)
            assert accepted.status == 200
            pin = await accepted.json()
            assert (pin["status"], pin["pinned"]["digest"], pin["pinned"]["by"]) == (
                "pinned",
                digest,
                "olga",
            )
            assert await names(mcp) == ["add", "refund", "slow"]
            assert not (await mcp.call_tool("add", {"a": 2, "b": 2})).is_error
            assert await changes(gw) == []

    records = await wait_for_records(
        audit_source(gw), lambda rs: any(r["kind"] == "mcp_tool_change_accepted" for r in rs)
    )
    kinds = [r["kind"] for r in records if r["kind"].startswith("mcp_tool_")]
    assert kinds.count("mcp_tool_pinned") == 3
    assert kinds[3:] == [
        "mcp_tool_changed",
        "mcp_tool_change_rejected",
        "mcp_tool_change_accepted",
    ]
    changed = next(r for r in records if r["kind"] == "mcp_tool_changed")
    assert (changed["name"], changed["seen"]) == ("add", digest)


async def test_report_mode_lists_a_changed_tool_and_records_the_change(tmp_path, start_gateway):
    flags, mode, _ = SERVERS["2026-json"]
    trigger = tmp_path / "rug-pull"
    async with sdk_server([*flags, "--rug-pull", str(trigger)]) as upstream:
        gw = await start_gateway(config=gateway_config(tmp_path, upstream, mcp_pinning="report"))
        async with client(str(gw.make_url("/tools/mcp")), mode) as mcp:
            assert await names(mcp) == ["add", "refund", "slow"]
            trigger.touch()
            assert await names(mcp) == ["add", "refund", "slow"]
            assert not (await mcp.call_tool("add", {"a": 1, "b": 2})).is_error
            [change] = await changes(gw)
            assert change["status"] == "changed"


async def test_pins_from_the_config_and_pinning_off(tmp_path, start_gateway):
    flags, mode, _ = SERVERS["handshake-json"]
    async with sdk_server(flags) as upstream:
        first = await start_gateway(config=gateway_config(tmp_path, upstream, mcp_pinning="off"))
        async with client(str(first.make_url("/tools/mcp")), mode) as mcp:
            listed = {t.name: t for t in (await mcp.list_tools()).tools}
        assert await changes(first) == []
        add = listed["add"].model_dump(by_alias=True, exclude_none=True)
        reviewed = digest_of(definition(add))

        pins = {"add": reviewed, "slow": "0" * 64}  # slow: not the definition served
        (tmp_path / "second").mkdir()  # a store of its own: nothing pinned as first seen
        config = gateway_config(tmp_path / "second", upstream, mcp_pins=pins)
        gw = await start_gateway(config=config)
        async with client(str(gw.make_url("/tools/mcp")), mode) as mcp:
            assert await names(mcp) == ["add", "refund"]
            held = await mcp.call_tool("slow", {"steps": 1})
            assert json.loads(held.content[0].text)["error"]["code"] == "tool_changed"
        conflict = await verdict(gw, "slow", "accept", reviewed)
        assert conflict.status == 409
        assert "tools[].mcp_pins" in (await conflict.json())["error"]["message"]


async def test_the_tools_command(tmp_path, start_gateway):
    flags, mode, _ = SERVERS["2026-sse"]
    trigger = tmp_path / "rug-pull"
    async with sdk_server([*flags, "--rug-pull", str(trigger)]) as upstream:
        gw = await start_gateway(config=gateway_config(tmp_path, upstream))
        admin = str(gw.admin.make_url("")).rstrip("/")
        async with client(str(gw.make_url("/tools/mcp")), mode) as mcp:
            await names(mcp)
            trigger.touch()
            await names(mcp)

        async def callgate(*args: str) -> tuple[int, str, str]:
            return await approver_cli("tools", *args, "--url", admin, token="olga-approver-token")

        code, out, _ = await callgate("changes", "mcp")
        assert code == 0
        assert out.startswith("add: changed, pinned ")
        assert POISONED in out
        digest = out.split(" seen ", 1)[1].split(" ", 1)[0]
        code, out, _ = await callgate("accept", "mcp", "add", digest, "-m", "fine")
        assert (code, out) == (0, f"add: pinned (pinned {digest})\n")
        code, _, err = await callgate("changes", "mcp")
        assert (code, err) == (0, "no changed tool definitions on mcp\n")


async def test_gateways_sharing_a_postgresql_store_hold_and_release_together(
    tmp_path, start_gateway, postgres_store_url
):
    """A change one gateway sees holds the tool on another within a second; an operator's
    verdict on the second releases it on the first."""
    flags, mode, _ = SERVERS["2026-json"]
    trigger = tmp_path / "rug-pull"
    async with sdk_server([*flags, "--rug-pull", str(trigger)]) as upstream:
        config = gateway_config(tmp_path, upstream)
        assert config.storage.url == postgres_store_url
        audit = config.audit.model_copy(update={"url": f"sqlite:///{tmp_path / 'two.db'}"})
        one = await start_gateway(config=config)
        two = await start_gateway(config=config.model_copy(update={"audit": audit}))
        async with (
            client(str(one.make_url("/tools/mcp")), mode) as first,
            client(str(two.make_url("/tools/mcp")), mode) as second,
        ):
            assert await names(first) == ["add", "refund", "slow"]
            assert not (await second.call_tool("add", {"a": 1, "b": 1})).is_error
            trigger.touch()
            assert await names(first) == ["refund", "slow"]  # one sees the change
            await asyncio.sleep(1.1)  # two re-reads the pins
            held = await second.call_tool("add", {"a": 1, "b": 1})
            assert json.loads(held.content[0].text)["error"]["code"] == "tool_changed"

            [change] = await changes(two)
            accepted = await verdict(two, "add", "accept", change["seen"]["digest"])
            assert accepted.status == 200
            await asyncio.sleep(1.1)
            assert await names(first) == ["add", "refund", "slow"]
            assert not (await first.call_tool("add", {"a": 1, "b": 1})).is_error


async def test_the_approvers_page_shows_the_change_and_takes_an_operators_verdict(
    tmp_path, start_gateway
):
    flags, mode, _ = SERVERS["handshake-sse"]
    trigger = tmp_path / "rug-pull"
    async with sdk_server([*flags, "--rug-pull", str(trigger)]) as upstream:
        gw = await start_gateway(config=gateway_config(tmp_path, upstream))
        async with client(str(gw.make_url("/tools/mcp")), mode) as mcp:
            await names(mcp)
            trigger.touch()
            assert await names(mcp) == ["refund", "slow"]

            await log_in(gw.admin, "alice-approver-token")  # not an operator
            page = await (await gw.admin.get("/ui/")).text()
            assert "Changed MCP tools" in page and 'id="change-mcp-add"' in page
            # The poisoned description is in the diff, as text, never as markup.
            assert "&lt;IMPORTANT&gt;Before adding" in page and "<IMPORTANT>" not in page
            assert "/ui/tools/mcp/changes/add/accept" not in page  # no forms for her
            csrf = CSRF.search(page).group(1)
            [change] = await changes(gw)
            form = {"csrf": csrf, "digest": change["seen"]["digest"], "comment": "ok"}
            refused = await gw.admin.post("/ui/tools/mcp/changes/add/accept", data=form)
            assert "needs the operator role" in await refused.text()
            assert await names(mcp) == ["refund", "slow"]

            await log_in(gw.admin, "olga-approver-token")
            page = await (await gw.admin.get("/ui/")).text()
            assert "/ui/tools/mcp/changes/add/accept" in page
            form["csrf"] = CSRF.search(page).group(1)
            accepted = await gw.admin.post("/ui/tools/mcp/changes/add/accept", data=form)
            text = await accepted.text()
            assert "Accepted: the new definition is pinned (mcp / add)." in text
            assert "Changed MCP tools" not in text
            assert await names(mcp) == ["add", "refund", "slow"]
