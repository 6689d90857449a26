"""The official MCP SDK's server in a real process (tests/support/mcp_sdk_server.py) and its
client, over Streamable HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.support.gateway import AGENT_TOKEN, REPO
from tests.support.process import free_port

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
        sys.executable, "-m", "tests.support.mcp_sdk_server", "--port", str(port), *flags,
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
