"""forward: send the call to the tool's upstream and stream its answer back unchanged.

Sends the agent's method, path, query, headers and body, minus hop-by-hop headers, the
agent's `Authorization` and anything named like the tool's credential header; adds the
tool's credentials, `X-Request-Id` and `traceparent`. Redirects are returned, not followed.
Refuses with 504 `upstream_timeout` when no response headers arrive within the tool's
`timeout_s`, and 502 `upstream_unreachable` on connect or reset errors; neither message
names the upstream URL. A failure after the response has started cannot be turned into an
error document: the agent's connection is then cut, so a truncated body is never
mistaken for a complete one.
"""

from __future__ import annotations

import base64
import logging
import time

import aiohttp
from aiohttp import web

from gateway.errors import GatewayError
from gateway.headers import without
from gateway.pipeline import idempotency
from gateway.pipeline.call import Call
from gateway.services import Services
from gateway.upstream import Outbound, send

log = logging.getLogger(__name__)

# Response headers the gateway sets itself.
_REPLACED_DOWNSTREAM = ("content-length", "x-request-id")


async def _open(call: Call, svc: Services) -> aiohttp.ClientResponse:
    assert call.tool is not None and call.upstream_url is not None
    outbound = Outbound(
        tool=call.tool,
        method=call.request.method,
        url=call.upstream_url,
        headers=call.headers,
        body=call.body,
        request_id=call.request_id,
        traceparent=call.request.headers.get("traceparent"),
    )
    started = time.perf_counter()
    try:
        upstream, call.upstream_ms = await send(outbound, svc)
    except GatewayError:
        call.upstream_ms = round((time.perf_counter() - started) * 1000, 3)
        raise
    call.upstream_status = upstream.status
    return upstream


class StreamBroken(Exception):
    """The response had started when the call failed: only cutting the connection is left."""

    def __init__(self, response: web.StreamResponse) -> None:
        super().__init__("the response broke off after it had started")
        self.response = response


async def run(call: Call, svc: Services) -> web.StreamResponse:
    # A call with an Idempotency-Key keeps its claim while it waits and streams.
    async with idempotency.lease_kept(call, svc):
        return await _forward(call, svc)


async def _forward(call: Call, svc: Services) -> web.StreamResponse:
    upstream = await _open(call, svc)
    try:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in without(upstream.headers, _REPLACED_DOWNSTREAM):
            response.headers.add(name, value)
        response.headers["X-Request-Id"] = call.request_id
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        keep = svc.config.idempotency.max_response_bytes if call.idempotency_key else -1
        # Kept as the upstream sent them, before prepare() adds the framing of this
        # connection (Transfer-Encoding, Content-Length, Date, Server): a replay has its own.
        replayable = idempotency.replayable_headers(upstream.headers) if keep >= 0 else []
        kept: list[bytes] = []
        try:
            await response.prepare(call.request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
                call.sent_bytes += len(chunk)
                if call.sent_bytes <= keep:
                    kept.append(chunk)
            await response.write_eof()
        except Exception as exc:  # the agent hung up or the upstream broke: the stream is cut
            log.warning(
                "response broke off",
                extra={"request_id": call.request_id, "error": type(exc).__name__},
            )
            raise StreamBroken(response) from exc
        if keep >= 0:
            call.captured = {
                "status": upstream.status,
                "headers": replayable,
                "body": base64.b64encode(b"".join(kept)).decode(),
                "too_large": call.sent_bytes > keep,
            }
        return response
    finally:
        upstream.release()
