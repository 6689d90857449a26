"""The upstream call itself: one request to a tool with the tool's credentials, shared by
the forward stage (a live call) and the execution of approved actions."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass

import aiohttp
from yarl import URL

from gateway.answer_guard import redactor_of
from gateway.config import Tool
from gateway.errors import ErrorCode, GatewayError
from gateway.headers import dropping
from gateway.observability import tracing
from gateway.observability.ids import call_traceparent, next_traceparent
from gateway.services import Services

log = logging.getLogger(__name__)

# Request headers the gateway sets or owns.
# aiohttp's server has already decoded a compressed request body: no content-encoding.
_REPLACED_UPSTREAM = (
    "host",
    "authorization",
    "content-length",
    "content-encoding",
    "expect",
    "x-request-id",
    "traceparent",
)


@functools.cache
def _read_timeout(seconds: float | None) -> aiohttp.ClientTimeout:
    """The longest pause while reading the response (headers: see asyncio.timeout below)."""
    return aiohttp.ClientTimeout(total=None, sock_read=seconds)


@functools.lru_cache(maxsize=256)
def _not_sent(
    credential_header: str | None, idempotency_upstream: bool, scrubbed: bool
) -> frozenset[str]:
    """The agent's headers a tool never gets: the gateway replaces them, or (the
    credential header) sets its own."""
    drop = {name.lower() for name in _REPLACED_UPSTREAM}
    if not idempotency_upstream:  # the key is the gateway's: the tool never sees it
        drop.add("idempotency-key")
    if scrubbed:  # answers are scrubbed as plain text: asked for unencoded
        drop.add("accept-encoding")
    if credential_header is not None:
        drop.add(credential_header.lower())
    return frozenset(drop)


def _upstream_headers(
    tool: Tool, headers: list[tuple[str, str]], request_id: str, traceparent: str
) -> list[tuple[str, str]]:
    credentials = tool.credentials
    scrubbed = redactor_of(tool) is not None
    drop = _not_sent(
        None if credentials is None else credentials.header, tool.idempotency_upstream, scrubbed
    )
    sent = dropping(headers, drop)
    if credentials is not None:
        sent.append((credentials.header, credentials.value.get_secret_value()))
    if scrubbed:
        sent.append(("Accept-Encoding", "identity"))
    sent.append(("X-Request-Id", request_id))
    sent.append(("traceparent", traceparent))
    # aiohttp's client keeps a repeated header only while its name is spelled the same way
    # (`X-A: 1` then `x-a: 2` sends just `x-a: 2`), so repeats take the first spelling.
    spelling: dict[str, str] = {}
    return [(spelling.setdefault(name.lower(), name), value) for name, value in sent]


@dataclass(frozen=True, slots=True)
class Outbound:
    """One request to a tool: what the agent sent (or an approved action stored)."""

    tool: Tool
    method: str
    url: URL
    headers: list[tuple[str, str]]  # the agent's, hop-by-hop ones already dropped
    body: bytes
    request_id: str
    # The trace of the call (Call.traceparent, kept by a parked action for its execution);
    # None: a trace of its own.
    traceparent: str | None
    # The longest pause while the answer streams: the tool's timeout_s, or None for
    # streams that may stay quiet for long (an MCP server's GET event stream).
    read_timeout_s: float | None = -1.0  # -1: the tool's timeout_s


async def send(out: Outbound, svc: Services) -> tuple[aiohttp.ClientResponse, float]:
    """Send `out` with the tool's credentials; (the response, ms until its headers came).

    Raises GatewayError 504 `upstream_timeout` or 502 `upstream_unreachable` (with
    `nothing_sent` when the connection was refused). The tool gets a `traceparent` in the
    call's trace: this request's CLIENT span when tracing, else the gateway's hop.
    """
    if svc.tracing is None:
        traceparent = next_traceparent(out.traceparent or call_traceparent(None))
        return await _send(out, svc, traceparent)
    with svc.tracing.client_span(out.method, out.url, out.traceparent) as span:
        upstream, ms = await _send(out, svc, tracing.traceparent_of(span))
        tracing.answered(span, upstream.status)
        return upstream, ms


async def _send(
    out: Outbound, svc: Services, traceparent: str
) -> tuple[aiohttp.ClientResponse, float]:
    tool = out.tool
    started = time.perf_counter()
    try:
        async with asyncio.timeout(tool.timeout_s):
            upstream = await svc.client_for(tool.name).request(
                out.method,
                out.url,
                headers=_upstream_headers(tool, out.headers, out.request_id, traceparent),
                data=out.body if out.body else None,
                allow_redirects=False,
                timeout=_read_timeout(
                    tool.timeout_s if out.read_timeout_s == -1.0 else out.read_timeout_s
                ),
            )
    except TimeoutError:
        raise GatewayError(
            ErrorCode.UPSTREAM_TIMEOUT,
            f"tool '{tool.name}' did not answer within {tool.timeout_s:g}s; "
            "the call may or may not have taken effect",
        ) from None
    except (aiohttp.ClientError, OSError) as exc:
        log.warning(
            "upstream unreachable",
            extra={"request_id": out.request_id, "tool": tool.name, "error": type(exc).__name__},
        )
        # Failed to connect (refused, unresolvable, TLS handshake): no byte of the request
        # reached the tool, so a retry with the same Idempotency-Key may run for real.
        refused = isinstance(exc, aiohttp.ClientConnectorError)
        raise GatewayError(
            ErrorCode.UPSTREAM_UNREACHABLE,
            f"tool '{tool.name}' could not be reached; nothing was sent"
            if refused
            else f"tool '{tool.name}' could not be reached or dropped the connection; "
            "the call may or may not have taken effect",
            nothing_sent=refused,
        ) from None
    finally:
        elapsed = time.perf_counter() - started
        svc.metrics.upstream_latency_of(tool.name).observe(elapsed)
    return upstream, round(elapsed * 1000, 3)
