"""A gateway in front of an MCP tool, with a policy that decides on MCP methods and tools."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.config import Config
from tests.approvals.helpers import approval_config

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
