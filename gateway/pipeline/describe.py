"""describe: the HTTP request -> the policy input document of DESIGN.md section 4.

Reads the body, at most the tool's `max_body_bytes` (decompressed) within its `timeout_s`:
a larger body is refused with 413 `body_too_large` before anything is forwarded (from
Content-Length when it is given, while reading otherwise); a body that does not arrive in
time, or arrives broken, with 400 `bad_request`. The policy sees what the tool will act on:
`request.body` is the parsed body whenever it is JSON, whatever the declared content type
(many servers parse JSON regardless), else null; a JSON object with a key given twice is
refused with 400, since the policy and the tool could each read a different value, and so
are header values that are not UTF-8 and JSON strings with half a surrogate pair; query
values are decoded exactly once. Credential headers never reach the policy.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from gateway.errors import ErrorCode, GatewayError
from gateway.headers import CREDENTIAL_HEADERS, dropping, without
from gateway.mcp import sessions
from gateway.mcp.messages import read_message
from gateway.pipeline.call import Call
from gateway.services import Services


def _too_large(limit: int) -> GatewayError:
    return GatewayError(
        ErrorCode.BODY_TOO_LARGE,
        f"the request body is larger than this tool accepts ({limit} bytes); nothing was sent",
    )


async def _read_body(call: Call, limit: int, timeout_s: float) -> bytes:
    if not call.request.body_exists:
        return b""
    declared = call.request.content_length
    if declared is not None and declared > limit:
        raise _too_large(limit)
    content = call.request.content
    chunks = []
    size = 0
    try:
        if declared is not None and content.is_eof():  # all of it came with the headers
            chunks.append(await content.read())
            size = len(chunks[0])
        else:
            async with asyncio.timeout(timeout_s):
                async for chunk in content.iter_any():
                    size += len(chunk)
                    if size > limit:
                        raise _too_large(limit)
                    chunks.append(chunk)
    except TimeoutError:
        raise GatewayError(
            ErrorCode.BAD_REQUEST,
            f"the request body did not arrive within {timeout_s:g}s; nothing was sent",
        ) from None
    except web.RequestPayloadError:
        raise GatewayError(
            ErrorCode.BAD_REQUEST,
            "the request body is malformed (broken chunked or compressed encoding); "
            "nothing was sent",
        ) from None
    if size > limit:  # a compressed body is counted decompressed
        raise _too_large(limit)
    return b"".join(chunks)


class _DuplicateKey(ValueError):
    pass


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateKey
    return obj


def _json_body(body: bytes) -> Any:
    if not body:
        return None
    try:
        parsed = json.loads(body, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except _DuplicateKey:
        raise GatewayError(
            ErrorCode.BAD_REQUEST,
            "the JSON body has an object with the same key twice; send each key once",
        ) from None
    except ValueError:  # includes UnicodeDecodeError and JSONDecodeError: not JSON
        return None
    if b"\\u" in body and not _is_unicode(json.dumps(parsed, ensure_ascii=False)):
        raise GatewayError(
            ErrorCode.BAD_REQUEST,
            "the JSON body escapes half of a UTF-16 surrogate pair (such as \\ud83d alone); "
            "send whole characters",
        )
    return parsed


def _is_unicode(text: str) -> bool:
    """False for strings holding lone surrogates: invalid Unicode, which the policy engine,
    the store and the tool could each read differently (regorus crashes on them)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_headers(headers: list[tuple[str, str]]) -> None:
    for name, value in headers:
        # aiohttp keeps bytes that are not UTF-8 as lone surrogates (surrogateescape).
        if not (_is_unicode(name) and _is_unicode(value)):
            raise GatewayError(
                ErrorCode.BAD_REQUEST,
                f"the header {name.encode('ascii', 'backslashreplace').decode()!r} "
                "is not valid UTF-8",
            )


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


async def read_request(call: Call) -> Any:
    """Read the body (and, for an MCP tool, its JSON-RPC message); the parsed JSON body.
    Also used to answer an MCP call refused before this stage in the MCP way."""
    assert call.tool is not None
    request = call.request
    call.body_read = True
    call.body = await _read_body(call, call.tool.max_body_bytes, call.tool.timeout_s)
    call.headers = without(request.headers)
    _check_headers(call.headers)
    body = _json_body(call.body)
    if call.tool.kind == "mcp":
        assert call.agent is not None
        call.mcp = read_message(request.method, body, call.body, request.headers)
        call.headers = sessions.unwrapped(call.agent, call.headers)
    return body


async def run(call: Call, svc: Services) -> None:
    assert call.agent is not None and call.tool is not None
    request = call.request
    body = await read_request(call)
    call.input = {
        "agent": {"id": call.agent.id, "roles": list(call.agent.roles)},
        "tool": {"name": call.tool.name, "kind": call.tool.kind},
        "request": {
            "method": request.method,
            "path": call.path,
            # request.query_string is decoded already; parse_qs must decode the raw one.
            "query": parse_qs(request.raw_path.partition("?")[2], keep_blank_values=True),
            "headers": _policy_headers(call),
            "body": body,
            "size": len(call.body),
        },
        "mcp": call.mcp.as_input() if call.mcp is not None else None,
        "context": {
            "request_id": call.request_id,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "session": request.headers.get("X-Agent-Session"),
            "model": request.headers.get("X-Agent-Model"),
        },
    }
