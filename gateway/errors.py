"""The one registry of errors the gateway itself produces (docs/errors.md, "Errors the gateway
returns").

Stages refuse a call by raising `GatewayError(code, message)`; `render()` is the only
place that turns one into an HTTP response, so every refusal has the same JSON shape.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web


class ErrorCode(enum.StrEnum):
    BAD_REQUEST = "bad_request"
    UNAUTHENTICATED = "unauthenticated"
    POLICY_DENIED = "policy_denied"
    SWITCHED_OFF = "switched_off"
    UNKNOWN_TOOL = "unknown_tool"
    BODY_TOO_LARGE = "body_too_large"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    IDEMPOTENCY_IN_FLIGHT = "idempotency_in_flight"
    IDEMPOTENCY_KEY_REQUIRED = "idempotency_key_required"
    RATE_LIMITED = "rate_limited"
    BUDGET_EXHAUSTED = "budget_exhausted"
    LOOP_DETECTED = "loop_detected"
    UPSTREAM_UNREACHABLE = "upstream_unreachable"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_RESPONSE_TOO_LARGE = "upstream_response_too_large"
    POLICY_UNAVAILABLE = "policy_unavailable"
    AUDIT_UNAVAILABLE = "audit_unavailable"
    STORE_UNAVAILABLE = "store_unavailable"
    INTERNAL_ERROR = "internal_error"
    UNSUPPORTED_BODY_ENCODING = "unsupported_body_encoding"
    IDEMPOTENCY_OUTCOME_UNKNOWN = "idempotency_outcome_unknown"
    TOOL_BUSY = "tool_busy"
    EXPECTATION_FAILED = "expectation_failed"
    # Typed tools (docs/typed-tools.md): a call, or the tool's answer, against its OpenAPI
    # document.
    SCHEMA_VIOLATION = "schema_violation"
    UPSTREAM_SCHEMA_VIOLATION = "upstream_schema_violation"
    # Admin listener and /actions: approvers' requests, and agents polling their actions.
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    CONFLICT = "conflict"
    POLICY_INVALID = "policy_invalid"
    TOOL_CHANGED = "tool_changed"


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    status: int
    retryable: bool


# code -> HTTP status and whether repeating the same call later can succeed.
SPECS: Mapping[ErrorCode, ErrorSpec] = {
    ErrorCode.BAD_REQUEST: ErrorSpec(400, False),
    ErrorCode.UNAUTHENTICATED: ErrorSpec(401, False),
    ErrorCode.POLICY_DENIED: ErrorSpec(403, False),
    ErrorCode.SWITCHED_OFF: ErrorSpec(403, False),
    ErrorCode.UNKNOWN_TOOL: ErrorSpec(404, False),
    ErrorCode.BODY_TOO_LARGE: ErrorSpec(413, False),
    ErrorCode.IDEMPOTENCY_KEY_REUSED: ErrorSpec(422, False),
    ErrorCode.IDEMPOTENCY_IN_FLIGHT: ErrorSpec(409, True),
    ErrorCode.IDEMPOTENCY_KEY_REQUIRED: ErrorSpec(428, False),
    ErrorCode.RATE_LIMITED: ErrorSpec(429, True),
    ErrorCode.BUDGET_EXHAUSTED: ErrorSpec(429, True),
    ErrorCode.LOOP_DETECTED: ErrorSpec(429, True),
    ErrorCode.UPSTREAM_UNREACHABLE: ErrorSpec(502, True),
    ErrorCode.UPSTREAM_TIMEOUT: ErrorSpec(504, True),
    # The call reached the tool: repeating it would act again and answer as large.
    ErrorCode.UPSTREAM_RESPONSE_TOO_LARGE: ErrorSpec(502, False),
    ErrorCode.POLICY_UNAVAILABLE: ErrorSpec(503, True),
    ErrorCode.AUDIT_UNAVAILABLE: ErrorSpec(503, True),
    ErrorCode.STORE_UNAVAILABLE: ErrorSpec(503, True),
    ErrorCode.INTERNAL_ERROR: ErrorSpec(500, True),
    ErrorCode.UNSUPPORTED_BODY_ENCODING: ErrorSpec(415, False),
    # The first call's effect is unknown: repeating it could act twice, so never retry it.
    ErrorCode.IDEMPOTENCY_OUTCOME_UNKNOWN: ErrorSpec(409, False),
    ErrorCode.TOOL_BUSY: ErrorSpec(503, True),
    ErrorCode.EXPECTATION_FAILED: ErrorSpec(417, False),
    ErrorCode.SCHEMA_VIOLATION: ErrorSpec(400, False),
    # The tool may have acted on the call: repeating it could act twice.
    ErrorCode.UPSTREAM_SCHEMA_VIOLATION: ErrorSpec(502, False),
    ErrorCode.NOT_FOUND: ErrorSpec(404, False),
    ErrorCode.FORBIDDEN: ErrorSpec(403, False),
    ErrorCode.CONFLICT: ErrorSpec(409, False),
    ErrorCode.POLICY_INVALID: ErrorSpec(422, False),
    # An MCP tool whose definition changed awaits an operator: retry once it is reviewed.
    ErrorCode.TOOL_CHANGED: ErrorSpec(409, False),
}


class GatewayError(Exception):
    """A refusal: the call stops here and the agent gets the JSON error of section 3."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        nothing_sent: bool = False,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        # An upstream failure known to have sent no byte to the tool (a refused connect):
        # a retry with the same Idempotency-Key may run for real.
        self.nothing_sent = nothing_sent
        # More fields of the error object, for the agent (`problems` of schema_violation).
        self.details = dict(details or {})

    @property
    def status(self) -> int:
        return SPECS[self.code].status


class AgentGone(Exception):
    """The agent hung up before anything was sent: the call ends unanswered."""


class StreamBroken(Exception):
    """The response had started when the call failed: only cutting the connection is left."""

    def __init__(self, response: web.StreamResponse, outcome: str = "stream_broken") -> None:
        super().__init__("the response broke off after it had started")
        self.response = response
        self.outcome = outcome  # what the call's closing audit record and metrics say


def render(error: GatewayError, request_id: str) -> web.Response:
    spec = SPECS[error.code]
    body = {
        "error": {
            "code": error.code.value,
            "message": error.message,
            "request_id": request_id,
            "retryable": spec.retryable,
            **error.details,
        }
    }
    response = web.Response(
        status=spec.status,
        body=json.dumps(body, ensure_ascii=False).encode(),
        content_type="application/json",
        charset="utf-8",
    )
    response.headers.update(error.headers)
    response.headers["X-Request-Id"] = request_id
    return response
