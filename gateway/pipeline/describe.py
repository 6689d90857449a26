"""describe: the HTTP request -> the policy input document of DESIGN.md section 4.

Reads the body, at most the tool's `max_body_bytes`: a larger body is refused with 413
`body_too_large` before anything is forwarded (from Content-Length when it is given, while
reading otherwise). `request.body` is the parsed JSON body when the content type is JSON
(or absent) and it parses; otherwise null. Credential headers never reach the policy.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qs

from aiohttp import hdrs

from gateway.errors import ErrorCode, GatewayError
from gateway.pipeline.call import Call
from gateway.pipeline.headers import CREDENTIAL_HEADERS, dropping, without
from gateway.services import Services


def _too_large(limit: int) -> GatewayError:
    return GatewayError(
        ErrorCode.BODY_TOO_LARGE,
        f"the request body is larger than this tool accepts ({limit} bytes); nothing was sent",
    )


async def _read_body(call: Call, limit: int) -> bytes:
    declared = call.request.content_length
    if declared is not None and declared > limit:
        raise _too_large(limit)
    chunks = []
    size = 0
    async for chunk in call.request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _json_body(content_type: str | None, body: bytes) -> Any:
    if not body:
        return None
    if content_type is not None:
        media = content_type.split(";", 1)[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            return None
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except ValueError:  # includes UnicodeDecodeError and JSONDecodeError
        return None


def _policy_headers(call: Call) -> dict[str, str]:
    assert call.tool is not None
    drop = set(CREDENTIAL_HEADERS)
    if call.tool.credentials is not None:
        drop.add(call.tool.credentials.header)
    headers: dict[str, str] = {}
    for name, value in dropping(call.headers, drop):
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


async def run(call: Call, svc: Services) -> None:
    assert call.agent is not None and call.tool is not None
    request = call.request
    call.body = await _read_body(call, call.tool.max_body_bytes)
    call.headers = without(request.headers)
    call.input = {
        "agent": {"id": call.agent.id, "roles": list(call.agent.roles)},
        "tool": {"name": call.tool.name, "kind": call.tool.kind},
        "request": {
            "method": request.method,
            "path": call.path,
            "query": parse_qs(request.query_string, keep_blank_values=True),
            "headers": _policy_headers(call),
            "body": _json_body(request.headers.get(hdrs.CONTENT_TYPE), call.body),
            "size": len(call.body),
        },
        "mcp": None,
        "context": {
            "request_id": call.request_id,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "session": request.headers.get("X-Agent-Session"),
            "model": request.headers.get("X-Agent-Model"),
        },
    }
