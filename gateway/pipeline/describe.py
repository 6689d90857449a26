"""describe: the HTTP request -> the policy input document (docs/policies.md, "Input").

Reads the request (gateway/inbound.py: the body within the tool's limits, read exactly as
the tool will read it, and the headers as forwarded) and, for an MCP tool, its JSON-RPC
message. The headers the policy sees are the ones forwarded, minus credential headers.
Query values are decoded exactly once.
"""

from __future__ import annotations

import functools
import time
from typing import Any
from urllib.parse import parse_qs

from gateway import inbound
from gateway.call import Call
from gateway.config import Principal
from gateway.headers import CREDENTIAL_HEADERS, dropping
from gateway.identity.verifier import JwtAgent
from gateway.pipeline import hooks
from gateway.services import Services


@functools.lru_cache(maxsize=256)
def _not_shown(credential_header: str | None) -> frozenset[str]:
    """The headers the policy never sees, for a tool whose credential goes in this one."""
    extra = {credential_header.lower()} if credential_header else set()
    return frozenset(name.lower() for name in CREDENTIAL_HEADERS) | extra


def _policy_headers(call: Call) -> dict[str, str]:
    assert call.tool is not None
    credentials = call.tool.credentials
    drop = _not_shown(None if credentials is None else credentials.header)
    headers: dict[str, str] = {}
    for name, value in dropping(call.headers, drop):
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


def _agent(agent: Principal) -> dict[str, Any]:
    if isinstance(agent, JwtAgent):
        identity = {"kind": "jwt", "issuer": agent.issuer}
        claims = agent.claims
    else:
        identity, claims = {"kind": "token"}, {}
    return {"id": agent.id, "roles": list(agent.roles), "claims": claims, "identity": identity}


async def run(call: Call, svc: Services) -> None:
    assert call.agent is not None and call.tool is not None
    request = call.request
    body = await inbound.read(call, svc.config.protection.max_json_depth)
    protocol = hooks.of(call)
    protocol.describe(call, body)
    await protocol.vet(call, svc)
    call.input = {
        "agent": _agent(call.agent),
        "tool": {"name": call.tool.name, "kind": call.tool.kind},
        "request": {
            "method": request.method,
            "path": call.path,
            # request.query_string is decoded already; parse_qs must decode the raw one.
            "query": parse_qs(request.raw_path.partition("?")[2], keep_blank_values=True),
            "headers": _policy_headers(call),
            "body": body,
            "form": call.form,
            "size": len(call.body),
        },
        "mcp": protocol.policy_input(call),
        "context": {
            "request_id": call.request_id,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "session": request.headers.get("X-Agent-Session"),
            "model": request.headers.get("X-Agent-Model"),
        },
    }
