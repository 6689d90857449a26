"""The tool's answer against its operation's documented responses (`validate_responses`,
docs/typed-tools.md), for the forward stage; not a stage itself.

`enforce` reads the whole answer first, up to the tool's `max_response_bytes` (502
`upstream_response_too_large` past it), and refuses one that does not match with 502
`upstream_schema_violation`, so that nothing of it reaches the agent; `report` passes the
answer on as it streams, keeps a copy up to the same bound (a larger one goes unchecked),
and counts, logs and audits what is wrong once it has ended. A gzip or deflate answer is
checked decoded; it is passed on as the tool sent it (or decoded already, when its secrets
were scrubbed: gateway/answer_guard.py).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import AsyncIterator

import aiohttp

from gateway.answer_guard import TooLarge
from gateway.audit.records import schema_record
from gateway.call import Call
from gateway.errors import ErrorCode, GatewayError
from gateway.openapi.operations import MAX_PROBLEMS, Operation, Problem, Spec
from gateway.services import Services

log = logging.getLogger(__name__)

_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


async def checked(
    call: Call,
    svc: Services,
    upstream: aiohttp.ClientResponse,
    chunks: AsyncIterator[bytes],
    decoded: bool,
) -> AsyncIterator[bytes]:
    """The chunks to stream to the agent: `chunks` (`decoded`: already without the
    tool's Content-Encoding), checked as the tool's mode says."""
    tool = call.tool
    assert tool is not None
    mode = tool.validate_responses
    spec = svc.specs.of(tool.name)
    operation = call.resolved.operation if call.resolved is not None else None
    if mode == "off" or spec is None or operation is None:
        return chunks
    if mode == "report":
        return _reported(call, svc, spec, operation, upstream, chunks, decoded)
    body = await _whole(call, chunks)
    if body is None:
        raise TooLarge(tool)
    problems = _problems(spec, operation, upstream, body, decoded, tool.max_response_bytes)
    if problems:
        raise _refusal(call, svc, problems)
    return _once(body)


async def _whole(call: Call, chunks: AsyncIterator[bytes]) -> bytes | None:
    """The whole answer (None past the tool's max_response_bytes), read before anything is
    sent; a tool that stops answering midway is refused as before the answer started."""
    assert call.tool is not None
    body = bytearray()
    try:
        async for chunk in chunks:
            body += chunk
            if len(body) > call.tool.max_response_bytes:
                return None
    except TimeoutError:  # the read timeout (the deadline cancels, and is not caught here)
        raise GatewayError(
            ErrorCode.UPSTREAM_TIMEOUT,
            f"tool '{call.tool.name}' stopped answering for {call.tool.timeout_s:g}s; "
            "the call may or may not have taken effect",
        ) from None
    except (aiohttp.ClientError, OSError):
        raise GatewayError(
            ErrorCode.UPSTREAM_UNREACHABLE,
            f"tool '{call.tool.name}' dropped the connection while answering; "
            "the call may or may not have taken effect",
        ) from None
    return bytes(body)


async def _once(body: bytes) -> AsyncIterator[bytes]:
    if body:
        yield body


def _problems(
    spec: Spec,
    operation: Operation,
    upstream: aiohttp.ClientResponse,
    body: bytes,
    decoded: bool,
    limit: int,
) -> list[Problem]:
    sent = "identity" if decoded else upstream.headers.get("Content-Encoding", "identity")
    encoding = sent.strip().lower()
    if encoding not in ("identity", "", *_DECODERS):
        return [Problem("/content-encoding", f"a {encoding} answer cannot be checked", "encoding")]
    if encoding in _DECODERS and body:
        decoder = zlib.decompressobj(_DECODERS[encoding])
        try:
            body = decoder.decompress(body, limit + 1)
        except zlib.error:
            return [Problem("/body", f"the answer is not valid {encoding}", "encoding")]
        if len(body) > limit:
            return [Problem("/body", "the decoded answer is too large to check", "size")]
    return spec.check_answer(operation, upstream.status, upstream.headers.get("Content-Type"), body)


def _refusal(call: Call, svc: Services, problems: list[Problem]) -> GatewayError:
    """The 502 for an answer that does not match, counted, logged and audited."""
    _record(call, svc, problems, "enforce")
    shown = "; ".join(str(p) for p in problems[:MAX_PROBLEMS])
    return GatewayError(
        ErrorCode.UPSTREAM_SCHEMA_VIOLATION,
        f"tool {call.tool.name if call.tool else '?'} answered in a way its OpenAPI document "
        f"does not describe, so its answer was withheld; the call may have taken effect: "
        f"{shown}",
        details={"problems": [p.as_json() for p in problems[:MAX_PROBLEMS]]},
    )


def _record(call: Call, svc: Services, problems: list[Problem], mode: str) -> None:
    assert call.tool is not None
    svc.metrics.schema_violations.labels(call.tool.name, "response", mode).inc()
    log.warning(
        "answer does not match the tool's OpenAPI document",
        extra={
            "request_id": call.request_id,
            "tool": call.tool.name,
            "status": call.upstream_status,
            "problems": [str(p) for p in problems[:MAX_PROBLEMS]],
        },
    )
    if svc.audit is not None:
        svc.audit.append(
            schema_record(call, "response", problems, mode, svc.config.audit.record_bodies)
        )


async def _reported(
    call: Call,
    svc: Services,
    spec: Spec,
    operation: Operation,
    upstream: aiohttp.ClientResponse,
    chunks: AsyncIterator[bytes],
    decoded: bool,
) -> AsyncIterator[bytes]:
    assert call.tool is not None
    limit = call.tool.max_response_bytes
    kept: list[bytes] | None = []
    size = 0
    async for chunk in chunks:
        yield chunk
        if kept is not None:
            size += len(chunk)
            if size > limit:
                kept = None
            else:
                kept.append(chunk)
    if kept is None:
        return  # too large to check: let through unchecked
    problems = _problems(spec, operation, upstream, b"".join(kept), decoded, limit)
    if problems:
        _record(call, svc, problems, "report")
