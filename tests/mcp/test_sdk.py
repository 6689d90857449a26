"""The official MCP SDK (2.x) on both sides of the gateway: its server in a real process,
its client in the test, over Streamable HTTP on 127.0.0.1. Both protocol eras (handshake:
initialize and sessions; 2026-07-28: server/discover, stateless), stateful and sessionless
servers, JSON and SSE framing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.audit import read_records
from tests.support.gateway import OTHER_TOKEN, auth
from tests.support.mcp import mcp_config, rpc
from tests.support.mcp_sdk import SERVERS, client, sdk_server


@pytest.mark.parametrize("server", list(SERVERS))
async def test_the_sdk_through_the_gateway(tmp_path, start_gateway, server):
    flags, mode, version = SERVERS[server]
    async with sdk_server(flags) as upstream:
        gw = await start_gateway(config=mcp_config(tmp_path, upstream))
        url = str(gw.make_url("/tools/mcp"))

        seen: list[str] = []

        async def log(params: Any) -> None:
            seen.append(f"log {params.data}")

        async with client(url, mode, logging_callback=log, log_level="info") as mcp:
            assert mcp.protocol_version == version

            listed = await mcp.list_tools()
            assert sorted(t.name for t in listed.tools) == ["add", "refund", "slow"]

            result = await mcp.call_tool("add", {"a": 2, "b": 3})
            assert not result.is_error
            assert result.structured_content == {"result": 5.0}

            denied = await mcp.call_tool("refund", {"amount": 5000, "currency": "EUR"})
            assert denied.is_error is True
            assert '"code": "policy_denied"' in denied.content[0].text
            assert "refunds of 5000 are too large" in denied.content[0].text

            async def progress(done: float, total: float | None, message: str | None) -> None:
                seen.append(f"progress {done:g}/{total:g}")

            slow = await mcp.call_tool("slow", {"steps": 3}, progress_callback=progress)
            seen.append("result")
            assert slow.structured_content == {"result": "done 3 steps"}
            if "--json-response" in flags:
                assert seen == ["result"], "JSON framing has no channel for notifications"
            else:
                assert seen == [
                    "log starting 3 steps",
                    "progress 1/3",
                    "progress 2/3",
                    "progress 3/3",
                    "result",
                ]

        # Another agent sees only the tools its policy lets it call.
        async with client(url, mode, token=OTHER_TOKEN) as mcp:
            assert sorted(t.name for t in (await mcp.list_tools()).tools) == ["add", "slow"]

    decisions = [r for r in read_records(gw.services.config.audit.path) if r["kind"] == "decision"]
    calls = [r["mcp"] for r in decisions if r.get("mcp", {}).get("method") == "tools/call"]
    assert {c["tool"] for c in calls} >= {"add", "refund", "slow"}
    if server.startswith("handshake") and "--stateless-http" not in flags:
        sessions = {
            r["request"]["headers"].get("mcp-session-id") for r in decisions if r["request"]
        }
        assert len(sessions - {None}) == 2, "each client kept the session id its server gave it"


@pytest.mark.parametrize("server", ["handshake-sse", "2026-json"])
async def test_batches_and_header_mismatches_never_reach_the_sdk_server(
    tmp_path, start_gateway, server
):
    flags, _mode, _version = SERVERS[server]
    async with sdk_server(flags) as upstream:
        gw = await start_gateway(config=mcp_config(tmp_path, upstream))
        headers = {**auth(), "Accept": "application/json, text/event-stream"}
        call = rpc("tools/call", {"name": "add", "arguments": {"a": 1, "b": 2}})
        resp = await gw.post("/tools/mcp", json=[call, call], headers=headers)
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == -32600
        mismatch = {**headers, "Mcp-Method": "tools/call", "Mcp-Name": "slow"}
        resp = await gw.post("/tools/mcp", json=call, headers=mismatch)
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == -32020, "HEADER_MISMATCH"
    records = read_records(gw.services.config.audit.path)
    assert not [r for r in records if r["kind"] == "intent"], "nothing was sent to the server"
