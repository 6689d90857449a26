"""Reading the agent's request as the tool will read it (docs/policies.md, "Input").

Reads the body, at most the tool's `max_body_bytes` (decompressed) within its `timeout_s`:
a larger body is refused with 413 `body_too_large` before anything is forwarded (from
Content-Length when it is given, while reading otherwise); a body that does not arrive in
time, or arrives broken, with 400 `bad_request`. The body is read exactly as the tool will
read it (gateway/request_body.py): one the gateway cannot read so is refused with 415
`unsupported_body_encoding` or 400 `bad_request`. The headers kept are the ones forwarded:
hop-by-hop headers, header names with `_` (which CGI and WSGI servers read as their `-`
twins) and the agent's forwarding headers (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`, ...)
are dropped, and the gateway's own forwarding headers are added
(`tools[].forwarded_headers`); header values that are not UTF-8 are refused with 400.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from gateway import request_body
from gateway.call import Call
from gateway.errors import ErrorCode, GatewayError
from gateway.headers import FORWARDING_HEADERS, forwarding, without
from gateway.request_body import is_unicode


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


def _check_headers(headers: list[tuple[str, str]]) -> None:
    for name, value in headers:
        # aiohttp keeps bytes that are not UTF-8 as lone surrogates (surrogateescape).
        if not (is_unicode(name) and is_unicode(value)):
            raise GatewayError(
                ErrorCode.BAD_REQUEST,
                f"the header {name.encode('ascii', 'backslashreplace').decode()!r} "
                "is not valid UTF-8",
            )


async def read(call: Call, max_json_depth: int) -> Any:
    """Read the body and the headers as forwarded; the parsed JSON body, if any."""
    assert call.tool is not None
    request = call.request
    call.body_read = True
    request_body.check_content_encoding(request.headers.getall("Content-Encoding", []))
    data = await _read_body(call, call.tool.max_body_bytes, call.tool.timeout_s)
    call.headers = _forwarded_headers(call)
    _check_headers(call.headers)
    body = request_body.read(data, request.headers.getall("Content-Type", []), max_json_depth)
    call.body = body.data
    if body.content_type is not None:  # transcoded to UTF-8
        call.headers = [
            (name, body.content_type if name.lower() == "content-type" else value)
            for name, value in call.headers
        ]
    call.form = body.form
    return body.json


def _forwarded_headers(call: Call) -> list[tuple[str, str]]:
    """The agent's headers as the tool gets them (the module docstring says which go)."""
    assert call.tool is not None
    kept = [
        (name, value)
        for name, value in without(call.request.headers, FORWARDING_HEADERS)
        if "_" not in name
    ]
    if call.tool.forwarded_headers == "set":
        kept += forwarding(call.request)
    return kept
