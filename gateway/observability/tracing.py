"""Traces of calls, exported over OTLP/HTTP (docs/operations.md, Tracing).

Built only when `telemetry.otlp` is set. Otherwise `Services.tracing` is None: account does
not start a span, and `stage(None, ...)` is one shared no-op context manager, so a gateway
that does not trace pays a test of None per stage and nothing else.

The spans are the gateway's own: a SERVER span per call (gateway/pipeline/account.py), a
child per stage that can take time (the policy decision, the limits, the approval wait) and
a CLIENT span per request to a tool (gateway/upstream.py), whose `traceparent` the tool gets.
Attributes follow OpenTelemetry's HTTP conventions and, for MCP, its MCP conventions
(`mcp.method.name`, `gen_ai.tool.name`), plus the gateway's `callgate.*`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from yarl import URL

from gateway.config import Otlp
from gateway.errors import GatewayError

if TYPE_CHECKING:  # annotations only: the request and the call are what spans describe
    from aiohttp import web

    from gateway.call import Call

log = logging.getLogger(__name__)

EXPORT_TIMEOUT_S = 5.0  # one export to the collector, retries included
FLUSH_TIMEOUT_S = 3.0  # what stopping the gateway waits for the last spans

_NO_SPAN: AbstractContextManager[None] = contextlib.nullcontext()
_PROPAGATOR = TraceContextTextMapPropagator()


class Tracing:
    """The tracer provider of one gateway process: sampled, batched, exported over OTLP."""

    def __init__(self, otlp: Otlp, version: str) -> None:
        # The SDK and the exporter are imported only by a gateway that traces.
        from gateway.observability.otlp import batched_provider

        provider, self._processor, self._exporter = batched_provider(
            otlp, version, EXPORT_TIMEOUT_S
        )
        self.tracer = provider.get_tracer("callgate", version)

    @contextlib.contextmanager
    def server_span(self, request: web.Request) -> Iterator[Span]:
        """The span of one agent call, continuing the agent's `traceparent` if valid."""
        with self.tracer.start_as_current_span(
            request.method,
            context=_PROPAGATOR.extract(request.headers),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": request.method,
                "url.path": request.path,
                "url.scheme": request.scheme,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield span

    @contextlib.contextmanager
    def client_span(self, method: str, url: URL, parent: str | None) -> Iterator[Span]:
        """The span of one request to a tool, a child of the call with the `parent`
        traceparent (None: of the current span, if any)."""
        context = _PROPAGATOR.extract({"traceparent": parent}) if parent else None
        attributes: dict[str, Any] = {
            "http.request.method": method,
            # No query (it may hold the agent's secrets) nor user info.
            "url.full": str(url.with_user(None).with_query(None).with_fragment(None)),
            "server.address": url.host or "",
        }
        if url.port is not None:
            attributes["server.port"] = url.port
        with self.tracer.start_as_current_span(
            method,
            context=context,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except GatewayError as error:
                failed(span, error.code.value)
                raise

    @contextlib.contextmanager
    def _stage(self, name: str) -> Iterator[Span]:
        with self.tracer.start_as_current_span(
            name, record_exception=False, set_status_on_exception=False
        ) as span:
            try:
                yield span
            except GatewayError as error:
                failed(span, error.code.value)
                raise
            except Exception as exc:
                failed(span, type(exc).__qualname__)
                raise

    async def flush(self) -> None:
        """Export the spans ended so far, now (off the event loop)."""
        await asyncio.to_thread(self._processor.force_flush)

    async def close(self) -> None:
        """Export what is left and stop, off the event loop: up to FLUSH_TIMEOUT_S, then a
        collector still not answering is given up (the rest is dropped), so it never holds
        up a stopping gateway. A daemon thread: one stuck in an export never blocks exit."""
        loop = asyncio.get_running_loop()
        flushed: asyncio.Future[None] = loop.create_future()

        def flush() -> None:
            try:
                self._processor.shutdown()  # type: ignore[no-untyped-call]
            finally:
                with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                    loop.call_soon_threadsafe(_settle, flushed)

        threading.Thread(target=flush, name="callgate-trace-flush", daemon=True).start()
        try:
            await asyncio.wait_for(asyncio.shield(flushed), FLUSH_TIMEOUT_S)
        except TimeoutError:
            self._exporter.shutdown()  # ends the exporter's retries
            log.warning("trace export: the last spans were dropped at stop")


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def stage(tracing: Tracing | None, name: str) -> AbstractContextManager[Span | None]:
    """A child span of the current one named `name`, or the no-op when not tracing; a
    refusal raised inside marks it failed with its error code."""
    if tracing is None:
        return _NO_SPAN
    return tracing._stage(name)


def traceparent_of(span: Span) -> str:
    """The W3C traceparent naming `span` as the parent (sampled or not)."""
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def failed(span: Span, error_type: str) -> None:
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, error_type))


def decided(span: Span, allow: bool, approval_required: bool) -> None:
    """The policy's decision: `allow`, `deny` or `approval` (allowed once approved)."""
    verdict = "deny" if not allow else "approval" if approval_required else "allow"
    span.set_attribute("callgate.decision", verdict)


def answered(span: Span, status: int) -> None:
    """A tool's answer on its CLIENT span: 4xx and 5xx fail it (HTTP conventions)."""
    span.set_attribute("http.response.status_code", status)
    if status >= 400:
        failed(span, str(status))


def end_call(span: Span, call: Call, status: int, error: str | None) -> None:
    """What became of the call on its SERVER span: who, which tool, the decision, the
    status; `error` is the code of a refusal (or a failure), which fails the span."""
    attributes: dict[str, Any] = {"http.response.status_code": status}
    name = call.request.method
    if call.agent is not None:
        attributes["callgate.agent"] = call.agent.id
    if call.tool is not None:
        attributes["callgate.tool"] = call.tool.name
        name = f"{name} /tools/{call.tool.name}"
    decision = call.decision
    if decision is not None:
        decided(span, decision.allow, decision.approval_required)
        attributes["callgate.policy_version"] = decision.policy_version
    if call.action_id is not None:
        attributes["callgate.action_id"] = call.action_id
    message = call.mcp
    if message is not None and message.method is not None:
        # OpenTelemetry's MCP conventions: the span is named `{method} {tool}`.
        attributes["mcp.method.name"] = message.method
        name = message.method
        if message.id is not None:
            attributes["jsonrpc.request.id"] = str(message.id)
        if message.tool is not None:
            attributes["gen_ai.tool.name"] = message.tool
            attributes["gen_ai.operation.name"] = "execute_tool"
            name = f"{name} {message.tool}"
    span.set_attributes(attributes)
    span.update_name(name)
    if error is not None:
        failed(span, error)
    elif status >= 500:
        failed(span, str(status))
