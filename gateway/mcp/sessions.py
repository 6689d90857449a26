"""MCP session ids bound to the agent they were issued to.

A server's `Mcp-Session-Id` reaches the agent as `<id>~<tag>`, the tag being an HMAC of
the id keyed with the agent's token digest (which other agents do not know). An agent
sends it back as it got it; the gateway checks the tag and forwards the server's own id.
Another agent holding the id cannot use it (its stream, its DELETE) nor make a valid tag:
the gateway answers as if the session did not exist (404). Nothing is stored, so every
replica, before and after a restart, checks tags the same way.
"""

from __future__ import annotations

import hashlib
import hmac

from gateway.config import Principal
from gateway.errors import ErrorCode, GatewayError

HEADER = "Mcp-Session-Id"
_SEPARATOR = "~"


def _tag(agent: Principal, session_id: str) -> str:
    return hmac.new(agent.token_digest, session_id.encode(), hashlib.sha256).hexdigest()[:32]


def for_agent(agent: Principal, session_id: str) -> str:
    return f"{session_id}{_SEPARATOR}{_tag(agent, session_id)}"


def from_agent(agent: Principal, value: str) -> str:
    """The server's session id in the agent's value; GatewayError when it is not this
    agent's."""
    session_id, separator, tag = value.rpartition(_SEPARATOR)
    if not separator or not hmac.compare_digest(tag, _tag(agent, session_id)):
        raise GatewayError(
            ErrorCode.NOT_FOUND,
            "no such MCP session for this agent; start a new one (initialize) without "
            "the Mcp-Session-Id header",
        )
    return session_id


def unwrapped(agent: Principal, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The agent's headers with its session id replaced by the server's."""
    found = [value for name, value in headers if name.lower() == "mcp-session-id"]
    if len(found) > 1:
        raise GatewayError(
            ErrorCode.BAD_REQUEST, "the Mcp-Session-Id header is given more than once"
        )
    if not found:
        return headers
    server_id = from_agent(agent, found[0])
    return [(n, server_id if n.lower() == "mcp-session-id" else v) for n, v in headers]
