"""Whether two calls are the same call: the one place request digests are computed.

- `of_request`: the bytes the tool would get (method, tool, raw target, body). An
  Idempotency-Key is bound to it, so the same key with another request is refused.
- `of_repeat`: what an agent repeats. For an MCP `tools/call` that is the server's tool
  and its arguments, since the JSON-RPC id (and so the body) differs each time; for any
  other call, `of_request`. The loop breaker counts by it, and a repeat of a parked MCP
  call finds its action by it.
- `of_approval`: what an approval is bound to: the stored request that will be sent,
  headers included, minus the incidentals a retry may change.

`require_same` refuses (422) an Idempotency-Key used again for another request.

The values are kept in the stores (idempotency keys, actions): changing how one is
computed makes repeats across an upgrade look like different calls.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from gateway.call import Call
from gateway.errors import ErrorCode, GatewayError

# Headers a retry of the same call may change without changing the call: hops, tracing,
# the gateway's own (Prefer: wait, Idempotency-Key) and what the client library adds.
INCIDENTAL_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "prefer",
        "traceparent",
        "tracestate",
        "x-request-id",
        "idempotency-key",
        "user-agent",
        "accept-encoding",
    }
)


def of_request(call: Call) -> str:
    """Computed once per call (the idempotency and limits stages both ask)."""
    if call.request_digest is None:
        assert call.tool is not None
        parts = (call.request.method, call.tool.name, call.request.raw_path)
        digest = hashlib.sha256("\0".join(parts).encode())
        digest.update(b"\0" + hashlib.sha256(call.body).digest())
        call.request_digest = digest.hexdigest()
    return call.request_digest


def of_repeat(call: Call) -> str:
    message = call.mcp
    if message is None or message.method != "tools/call":
        return of_request(call)
    digest = hashlib.sha256(f"{message.tool}\0{message.arguments_sha256}".encode())
    return "mcp-call:" + digest.hexdigest()


def of_approval(tool: str, request: dict[str, Any]) -> str:
    """`request` is the action's stored request (approvals/parking.py)."""
    essentials = {
        "tool": tool,
        "method": request["method"],
        "target": request["target"],
        "headers": [
            [name, value]
            for name, value in request["headers"]
            if name.lower() not in INCIDENTAL_HEADERS
        ],
        "body_sha256": request["body_sha256"],
    }
    return hashlib.sha256(orjson.dumps(essentials, option=orjson.OPT_SORT_KEYS)).hexdigest()


def require_same(kept: str, mine: str) -> None:
    """Refuses a key used again for another request: `kept` is the digest the key was
    first used with, `mine` this call's."""
    if kept != mine:
        raise GatewayError(
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
            "this Idempotency-Key was already used for a different request; "
            "use a new key for a new call",
        )
