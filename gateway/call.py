"""The state of one tool call as it goes through the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web
from yarl import URL

from gateway.config import Principal, Tool

if TYPE_CHECKING:  # annotations only: the call is what those layers act on
    from gateway.mcp.messages import McpMessage
    from gateway.openapi.operations import Resolved
    from gateway.policy.decision import Decision


@dataclass(slots=True)
class Call:
    request: web.Request
    request_id: str
    received: float  # time.perf_counter() when the request arrived
    agent: Principal | None = None
    tool: Tool | None = None
    path: str = "/"  # the decoded path below the tool, as the policy sees it
    upstream_url: URL | None = None
    # The agent's headers in order, repeats kept, hop-by-hop ones already dropped.
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    form: dict[str, str] | None = None  # a form body's fields, as the policy sees them
    input: dict[str, Any] | None = None
    decision: Decision | None = None
    policy_ms: float | None = None
    intent_recorded: bool = False  # the audit log holds this call's intent: it may be sent
    upstream_status: int | None = None
    upstream_ms: float | None = None  # until the upstream's response headers arrived
    sent_bytes: int = 0  # response body bytes passed to the agent
    # Secrets replaced in the tool's answer, by kind (credential, pattern).
    redacted: dict[str, int] = field(default_factory=dict)
    # The error code of an answer whose end was replaced by a refusal (an MCP event
    # stream past the tool's max_response_bytes).
    answer_cut: str | None = None
    action_id: str | None = None  # parked as this pending action
    idempotency_key: str | None = None  # this call claimed the key: its answer is kept
    replayed: bool = False  # answered with the stored answer of an earlier call
    # The tool's answer, kept for replays (gateway/answers.py).
    captured: dict[str, Any] | None = None
    # Set when this call's request may have reached the tool but its answer did not come
    # back whole (why: timeout, no_answer, broken_answer, cut_short); its key then keeps
    # that unknown outcome instead of letting a retry send the call again.
    outcome_unknown: str | None = None
    body_read: bool = False  # describe read the body (and the MCP message)
    mcp: McpMessage | None = None  # for MCP tools: the JSON-RPC message of the call
    pending_answer: bool = False  # answered while its action waits (an MCP 202)
    request_digest: str | None = None  # fingerprint.of_request, once it was computed
    # For a tool with `openapi`: the call as its document reads it (operation stage).
    resolved: Resolved | None = None
    # The W3C traceparent of this call's trace, set by account: the gateway's server span,
    # or (not tracing) the agent's valid one or a new one (docs/operations.md, Tracing).
    traceparent: str = ""

    @property
    def trace_id(self) -> str | None:
        """The 32 hex digits of this call's trace id, once account has set it."""
        return self.traceparent[3:35] or None
