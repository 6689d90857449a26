"""The OpenTelemetry SDK's side of tracing: the tracer provider, its sampler and the batched
OTLP/HTTP exporter (gateway/observability/tracing.py imports it only when tracing is on)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from gateway.config import Otlp, hide_password

log = logging.getLogger("gateway.observability.tracing")

# The SDK's loggers that would report a dead collector once per batch, or a full queue once
# per span; _ReportedOnce says it once instead.
_CHATTY = ("opentelemetry.exporter.otlp", "opentelemetry.sdk._shared_internal")


def batched_provider(
    otlp: Otlp, version: str, timeout_s: float
) -> tuple[TracerProvider, BatchSpanProcessor, SpanExporter]:
    """A provider sampling ParentBased(TraceIdRatioBased(sample_ratio)), its batch
    processor and its exporter (each export, retries included, at most `timeout_s`)."""
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    exporter = _ReportedOnce(
        OTLPSpanExporter(
            endpoint=otlp.endpoint,
            headers={name: value.get_secret_value() for name, value in otlp.headers.items()},
            timeout=timeout_s,
        ),
        otlp.endpoint,
    )
    processor = BatchSpanProcessor(exporter)
    provider = TracerProvider(
        sampler=ParentBased(TraceIdRatioBased(otlp.sample_ratio)),
        resource=Resource.create({"service.name": otlp.service_name, "service.version": version}),
        shutdown_on_exit=False,  # Tracing.close flushes; at exit the event loop is gone
    )
    provider.add_span_processor(processor)
    return provider, processor, exporter


class _ReportedOnce(SpanExporter):
    """The OTLP exporter, logging a failing collector once (and its recovery), not per
    batch: a dead collector must never flood the gateway's log."""

    def __init__(self, exporter: SpanExporter, endpoint: str) -> None:
        self._exporter = exporter
        self._endpoint = hide_password(endpoint)
        self._failing = False
        self._shut = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._exporter.export(spans)
        except Exception:  # never let the processor's thread die on it
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.FAILURE and not self._failing:
            self._failing = True
            log.warning(
                "trace export failing: spans are dropped until the collector answers",
                extra={"endpoint": self._endpoint},
            )
        elif result is SpanExportResult.SUCCESS and self._failing:
            self._failing = False
            log.info("trace export recovered", extra={"endpoint": self._endpoint})
        return result

    def shutdown(self) -> None:
        if not self._shut:  # the SDK's exporter warns on a second one
            self._shut = True
            self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)
