"""The official MCP SDK (2.x) on both sides of the gateway: its server in a real process,
its client in the test, over Streamable HTTP on 127.0.0.1. Both protocol eras (handshake:
initialize and sessions; 2026-07-28: server/discover, stateless), stateful and sessionless
servers, JSON and SSE framing."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.audit.helpers import read_records
from tests.conftest import AGENT_TOKEN, OTHER_TOKEN, auth
from tests.gateway_process import free_port
from tests.mcp.helpers import mcp_config, rpc

REPO = Path(__file__).resolve().parents[2]

SERVERS = {
    # name: (server flags, client mode, protocol version the client ends up speaking)
    "handshake-sse": ([], "legacy", "2025-11-25"),
    "handshake-json": (["--json-response"], "legacy", "2025-11-25"),
    "handshake-sessionless": (["--stateless-http"], "legacy", "2025-11-25"),
    "2026-sse": ([], "auto", "2026-07-28"),
    "2026-json": (["--json-response"], "auto", "2026-07-28"),
}


@contextlib.asynccontextmanager
async def sdk_server(flags: list[str]) -> AsyncIterator[str]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.mcp.sdk_server", "--port", str(port), *flags,
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            assert (await proc.stdout.readline()).strip() == b"ready"
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        await proc.wait()


@contextlib.asynccontextmanager
async def client(url: str, mode: str, token: str = AGENT_TOKEN, **kw: Any) -> AsyncIterator[Client]:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    transport = streamable_http_client(url, http_client=http)
    async with http, Client(transport, mode=mode, **kw) as mcp:  # type: ignore[arg-type]
        yield mcp


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
