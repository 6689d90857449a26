"""Request ids (UUIDv7: sortable by time) and W3C trace context propagation."""

from __future__ import annotations

import re
import secrets

import uuid_utils

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def new_request_id() -> str:
    return str(uuid_utils.uuid7())


def next_traceparent(incoming: str | None) -> str:
    """The traceparent to send upstream: the caller's trace continued, or a new one.

    The gateway is a hop of its own, so it keeps the trace id and flags and puts its own
    span id in the parent field (W3C Trace Context, section 3.2). An absent or invalid
    header starts a new sampled-off trace.
    """
    if incoming:
        match = _TRACEPARENT.match(incoming.strip().lower())
        if match:
            version, trace_id, span_id, flags = match.groups()
            if version != "ff" and trace_id != _ZERO_TRACE and span_id != _ZERO_SPAN:
                return f"00-{trace_id}-{secrets.token_hex(8)}-{flags}"
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00"
