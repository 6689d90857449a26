"""A gateway in front of an MCP tool, with a policy that decides on MCP methods and tools;
MCP servers as small aiohttp apps answering at /mcp (scripted event streams among them);
JSON-RPC messages and an agent's POST of one."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.config import Config
from tests.support.approvals import approval_config
from tests.support.gateway import auth

MCP_REGO = """package gateway

import rego.v1

default decision := {"allow": false, "reason": "not allowed"}

plumbing := {"initialize", "ping", "server/discover", "notifications/initialized", "subscriptions/listen", "logging/setLevel"}

# The GET event stream, DELETE, and the protocol's own requests.
decision := {"allow": true, "reason": "MCP plumbing"} if input.mcp.method == null

decision := {"allow": true, "reason": "MCP plumbing"} if input.mcp.method in plumbing

# tools/list itself is allowed; each listed tool is then checked with input.mcp.tool set.
decision := {"allow": true, "reason": "listing"} if {
    input.mcp.method == "tools/list"
    input.mcp.tool == null
}

decision := {"allow": true, "reason": "anyone may add"} if {
    input.mcp.method in {"tools/list", "tools/call"}
    input.mcp.tool in {"add", "slow"}
}

decision := {
    "allow": true,
    "approval_required": true,
    "reason": "refunds need finance",
    "approval": {"roles": ["finance"]},
} if {
    input.mcp.method in {"tools/list", "tools/call"}
    input.mcp.tool == "refund"
    "caller" in input.agent.roles
    not too_large
}

decision := {"allow": false, "reason": sprintf("refunds of %v are too large", [amount])} if {
    input.mcp.tool == "refund"
    too_large
    amount := input.mcp.arguments.amount
}

too_large if input.mcp.arguments.amount > 1000
"""


def mcp_config(tmp_path: Path, upstream: str, **tool: Any) -> Config:
    config = approval_config(tmp_path, "http://127.0.0.1:9")
    (config.policy.path / "gateway.rego").write_text(MCP_REGO)
    mcp_tool = config.tools[0].model_copy(
        update={"name": "mcp", "upstream": upstream.rstrip("/"), "kind": "mcp", **tool}
    )
    return config.model_copy(update={"tools": (mcp_tool,)})


def rpc(method: str, params: dict[str, Any] | None = None, id: int | None = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    if id is not None:
        message["id"] = id
    return message


def mcp_app(handler: Any) -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/mcp", handler)
    return app


async def start_with(
    tmp_path: Any, start_upstream: Any, start_gateway: Any, handler: Any, **tool: Any
) -> Any:
    """A gateway in front of an MCP server answering at /mcp with `handler`."""
    url = await start_upstream(mcp_app(handler))
    return await start_gateway(config=mcp_config(tmp_path, url + "/mcp", **tool))


async def post(
    gw: Any, message: Any, token_headers: dict[str, str] | None = None, **headers: str
) -> Any:
    return await gw.post(
        "/tools/mcp",
        json=message,
        headers={
            **(token_headers or auth()),
            "Accept": "application/json, text/event-stream",
            **headers,
        },
    )


class Streams:
    """An MCP server whose event streams are scripted: each POST method or GET answers
    with the events listed for it, after an optional quiet time."""

    def __init__(self, events: dict[str, list[str]], quiet_s: float = 0) -> None:
        self.events = events
        self.quiet_s = quiet_s

    async def handle(self, request: web.Request) -> web.StreamResponse:
        method = "GET" if request.method == "GET" else (await request.json())["method"]
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        await asyncio.sleep(self.quiet_s)
        for event in self.events[method]:
            await stream.write(event.encode())
        await stream.write_eof()
        return stream


async def start_streams(
    tmp_path: Any, start_upstream: Any, start_gateway: Any, streams: Streams, **tool: Any
) -> Any:
    return await start_with(tmp_path, start_upstream, start_gateway, streams.handle, **tool)
