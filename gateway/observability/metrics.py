"""Prometheus metrics, in a registry owned by the app (no module globals).

Under `serve --workers` each worker writes them to a shared folder and `/metrics` sums the
group (gateway/workers.py); each gauge says how: a sum over the live workers, or the
lowest or highest of them.

Labels come from fixed sets only: tool and agent ids from the config (or `-` when the
call named none that exists), outcomes from the error registry plus `forwarded`. Nothing
an agent controls (paths, headers) becomes a label.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
POLICY_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.025)

UNKNOWN = "-"

M = TypeVar("M", bound=MetricWrapperBase)


class Children(Generic[M]):
    """A metric's child for each set of label values, looked up once: `labels()` checks
    the values and takes a lock on every call, which the metrics of every call need not
    pay. The label sets are fixed (see above), so this stays small."""

    def __init__(self, metric: M) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "callgate_requests",
            "Tool calls by tool, agent and outcome (forwarded or an error code)",
            ["tool", "agent", "outcome"],
            registry=self.registry,
        )
        self.mcp_requests = Counter(
            "callgate_mcp_requests",
            "MCP messages by tool, MCP method (a fixed set; `other` for the rest; `stream`"
            " and `end` for GET and DELETE) and outcome",
            ["tool", "method", "outcome"],
            registry=self.registry,
        )
        self.gateway_latency = Histogram(
            "callgate_request_duration_seconds",
            "Time from request received to response headers sent, by tool",
            ["tool"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.upstream_latency = Histogram(
            "callgate_upstream_duration_seconds",
            "Time the upstream took to answer with its headers, by tool",
            ["tool"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.policy_latency = Histogram(
            "callgate_policy_evaluation_seconds",
            "Time to evaluate the policy decision",
            buckets=POLICY_BUCKETS,
            registry=self.registry,
        )
        self.policy_loaded = Gauge(
            "callgate_policy_loaded",
            "1 when a policy set is loaded and serving",
            multiprocess_mode="livemin",
            registry=self.registry,
        )
        self.policy_reloads = Counter(
            "callgate_policy_reloads",
            "Policy (re)load attempts by set (enforced, shadow) and result (loaded, unchanged,"
            " failed)",
            ["set", "result"],
            registry=self.registry,
        )
        self.policy_reload_failing = Gauge(
            "callgate_policy_reload_failing",
            "1 while the newest policy set was refused (the last good set keeps serving)",
            ["set"],
            multiprocess_mode="livemax",
            registry=self.registry,
        )
        self.shadow_disagreements = Counter(
            "callgate_policy_shadow_disagreements",
            "Calls the shadow policy set would have decided otherwise, by tool and direction"
            " (enforced->shadow outcome: allow, approval, deny, error)",
            ["tool", "direction"],
            registry=self.registry,
        )
        self.audit_records = Counter(
            "callgate_audit_records",
            "Audit records committed to the store",
            registry=self.registry,
        )
        self.audit_flush = Histogram(
            "callgate_audit_flush_seconds",
            "Time to commit one batch of audit records",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.audit_available = Gauge(
            "callgate_audit_available",
            "1 while the audit store can be written; at 0 nothing is forwarded",
            multiprocess_mode="livemin",
            registry=self.registry,
        )
        self.audit_lost = Counter(
            "callgate_audit_records_lost",
            "Audit records given up: the queue overflowed during an outage, or shutdown",
            registry=self.registry,
        )
        self.audit_queued_bytes = Gauge(
            "callgate_audit_queued_bytes",
            "JSON bytes of the audit records waiting for the store (bounded by"
            " audit.max_queued_bytes)",
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.audit_write_timeouts = Counter(
            "callgate_audit_write_timeouts",
            "Calls refused because their intent was not committed within audit.write_timeout_s",
            registry=self.registry,
        )
        self.webhook_failures = Counter(
            "callgate_webhook_failures",
            "Pending-action announcements a webhook never took, after every retry",
            registry=self.registry,
        )
        self.sessions_stuck = Gauge(
            "callgate_sessions_stuck",
            "Agent sessions currently refused for their call budget or the loop breaker",
            multiprocess_mode="livemax",
            registry=self.registry,
        )
        self.calls_in_flight = Gauge(
            "callgate_calls_in_flight",
            "Calls in progress by tool, each held from admission until its answer is sent"
            " (tools[].max_concurrent caps it)",
            ["tool"],
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.refusals_shed = Counter(
            "callgate_refusals_shed",
            "Refused calls past protection.refusals counted in a summary audit record"
            " instead of one record each, by what they were counted against (agent, client)",
            ["by"],
            registry=self.registry,
        )
        self.schema_violations = Counter(
            "callgate_schema_violations",
            "Calls (where=request) or tool answers (where=response) that did not match the"
            " tool's OpenAPI document, by tool and what was done (enforce: refused; report:"
            " let through)",
            ["tool", "where", "mode"],
            registry=self.registry,
        )
        self.openapi_reloads = Counter(
            "callgate_openapi_reloads",
            "Reloads of the tools' OpenAPI documents by result (loaded, unchanged, failed)",
            ["result"],
            registry=self.registry,
        )
        self.responses_too_large = Counter(
            "callgate_responses_too_large",
            "Tool answers larger than the tool's max_response_bytes, refused or cut, by tool"
            " and by what was answered (call, approved_action)",
            ["tool", "source"],
            registry=self.registry,
        )
        self.response_redactions = Counter(
            "callgate_response_redactions",
            "Secrets replaced by [redacted] in tool answers, by tool and kind (credential:"
            " the tool's credential or ${ENV} values; pattern: its redact_response)",
            ["tool", "kind"],
            registry=self.registry,
        )
        self.mcp_tool_changes = Counter(
            "callgate_mcp_tool_changes",
            "MCP tool definitions found changed since they were pinned, by tool (each change"
            " counted once, by the gateway that recorded it)",
            ["tool"],
            registry=self.registry,
        )
        # What every call counts, by its labels (see Children).
        self.requests_of = Children(self.requests)
        self.gateway_latency_of = Children(self.gateway_latency)
        self.upstream_latency_of = Children(self.upstream_latency)
