"""forward: send the call to the tool's upstream and stream its answer back, capped at the
tool's `max_response_bytes` and scrubbed of its secrets (gateway/answer_guard.py).

Sends the agent's method, path, query, headers and body, minus hop-by-hop headers, the
agent's `Authorization` and anything named like the tool's credential header; adds the
tool's credentials, `X-Request-Id` and `traceparent`. Redirects are returned, not followed.
Refuses with 504 `upstream_timeout` when no response headers arrive within the tool's
`timeout_s`, or the answer has not started by its `deadline_s`, and 502
`upstream_unreachable` on connect or reset errors; no message names the upstream URL. A
failure after the response has started cannot be turned into an error document: the
agent's connection is then cut, so a truncated body is never mistaken for a complete one.
That is also the end of an answer still streaming at the deadline (an event stream kept
alive with comments never trips `timeout_s`, the idle limit); only the event streams an
MCP server keeps open (GET, `subscriptions/listen`) have no deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDictProxy

from gateway import answer_guard, answers
from gateway.call import Call
from gateway.config import Tool
from gateway.errors import ErrorCode, GatewayError, StreamBroken
from gateway.headers import without
from gateway.pipeline import answer_schema, hooks
from gateway.services import Services
from gateway.upstream import Outbound, send

log = logging.getLogger(__name__)

AGENT_CHECK_S = 0.5  # how often a quiet event stream looks for an agent that left

# Response headers the gateway sets itself.
_REPLACED_DOWNSTREAM = frozenset({"content-length", "x-request-id"})


async def _open(call: Call, svc: Services) -> aiohttp.ClientResponse:
    assert call.tool is not None and call.upstream_url is not None
    protocol = hooks.of(call)
    outbound = Outbound(
        tool=call.tool,
        method=call.request.method,
        url=call.upstream_url,
        headers=protocol.outbound_headers(call, call.headers),
        body=call.body,
        request_id=call.request_id,
        traceparent=call.traceparent,
        read_timeout_s=None if protocol.kept_open(call) else -1.0,
    )
    started = time.perf_counter()
    try:
        upstream, call.upstream_ms = await send(outbound, svc)
    except (GatewayError, asyncio.CancelledError):  # refused, or past the deadline
        call.upstream_ms = round((time.perf_counter() - started) * 1000, 3)
        raise
    call.upstream_status = upstream.status
    return upstream


async def _pump(
    chunks: AsyncIterator[bytes],
    response: web.StreamResponse,
    call: Call,
    keep: int,
    kept: list[bytes],
    cap: int | None,
) -> None:
    async for chunk in chunks:
        if cap is not None and call.sent_bytes + len(chunk) > cap:
            assert call.tool is not None
            raise answer_guard.TooLarge(call.tool)
        await response.write(chunk)
        call.sent_bytes += len(chunk)
        if call.sent_bytes <= keep:
            kept.append(chunk)
    await response.write_eof()


async def _unless_the_agent_leaves(pump: Coroutine[Any, Any, None], request: web.Request) -> None:
    """Run an event stream until it ends or the agent hangs up: a quiet stream would
    otherwise keep the upstream's stream open for nobody (nothing is written to notice)."""
    task = asyncio.ensure_future(pump)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=AGENT_CHECK_S)
            if done:
                return task.result()
            transport = request.transport
            if transport is None or transport.is_closing():
                raise ConnectionResetError("the agent closed the event stream")
    finally:
        task.cancel()


def _past_deadline(tool: Tool) -> GatewayError:
    return GatewayError(
        ErrorCode.UPSTREAM_TIMEOUT,
        f"tool '{tool.name}' did not answer within its deadline of {tool.deadline_s:g}s; "
        "the call may or may not have taken effect",
    )


async def run(call: Call, svc: Services) -> web.StreamResponse:
    """The call within the tool's deadline: a 504 before the answer starts, a cut after."""
    assert call.tool is not None
    at = (
        None
        if hooks.of(call).kept_open(call)
        else asyncio.get_running_loop().time() + call.tool.deadline_s
    )
    deadline = asyncio.timeout_at(at)
    response = web.StreamResponse()
    try:
        async with deadline:
            return await _relay(call, svc, response)
    except TimeoutError:
        if not deadline.expired():
            raise
        if not response.prepared:
            raise _past_deadline(call.tool) from None
        log.warning(
            "response cut at the tool's deadline",
            extra={"request_id": call.request_id, "deadline_s": call.tool.deadline_s},
        )
        raise StreamBroken(response) from None


def _has_body(call: Call, status: int) -> bool:
    return call.request.method != "HEAD" and status not in (204, 304)


async def _relay(call: Call, svc: Services, response: web.StreamResponse) -> web.StreamResponse:
    upstream = await _open(call, svc)
    try:
        tool = call.tool
        assert tool is not None
        if _has_body(call, upstream.status):
            answer_guard.check_declared(tool, upstream.content_length)
        response.set_status(upstream.status, upstream.reason)
        redactor = answer_guard.redactor_of(tool)
        for name, value in without(upstream.headers, _REPLACED_DOWNSTREAM):
            response.headers.add(
                name, value if redactor is None else redactor.text(value, call.redacted)
            )
        response.headers["X-Request-Id"] = call.request_id
        body, changed = answer_guard.scrubbed(
            tool, redactor, upstream.headers, upstream.content.iter_any(), call.redacted
        )
        if changed:  # a decoded body is passed on unencoded
            response.headers.popall("Content-Encoding", None)
        protocol = hooks.of(call)
        chunks = await protocol.answer(call, svc, upstream, response.headers, body)
        cap = None  # a rewritten answer was capped as it was read
        if chunks is None:
            chunks, cap = body, tool.max_response_bytes
            if upstream.content_length is not None and not changed:
                response.content_length = upstream.content_length
        # A typed tool's answer checked against its document (validate_responses).
        chunks = await answer_schema.checked(call, svc, upstream, chunks, decoded=changed)
        keep = svc.config.idempotency.max_response_bytes if call.idempotency_key else -1
        # Kept as the agent gets them (an MCP session id wrapped for this agent), before
        # prepare() adds the framing of this connection (Transfer-Encoding, Content-Length,
        # Date, Server): a replay has its own.
        replayable = (
            answers.replayable_headers(CIMultiDictProxy(response.headers)) if keep >= 0 else []
        )
        kept: list[bytes] = []
        try:
            await response.prepare(call.request)
            pump = _pump(chunks, response, call, keep, kept, cap)
            if protocol.watches_agent(call, upstream.content_type):
                await _unless_the_agent_leaves(pump, call.request)
            else:
                await pump
        except answer_guard.TooLarge as exc:
            log.warning(
                "response cut at the tool's max_response_bytes",
                extra={"request_id": call.request_id, "sent_bytes": call.sent_bytes},
            )
            raise StreamBroken(response, exc.code.value) from exc
        except Exception as exc:  # the agent hung up or the upstream broke: the stream is cut
            log.warning(
                "response broke off",
                extra={"request_id": call.request_id, "error": type(exc).__name__},
            )
            raise StreamBroken(response) from exc
        if keep >= 0:
            call.captured = answers.kept(
                upstream.status, replayable, b"".join(kept), truncated=call.sent_bytes > keep
            )
        return response
    finally:
        upstream.release()
