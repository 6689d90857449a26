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


def call_traceparent(incoming: str | None) -> str:
    """The trace a call belongs to when the gateway does not trace: the caller's, when its
    `traceparent` is valid, or a new sampled-off one. Its trace id is the call's in the
    audit log and the access log, and the one the tool gets."""
    if incoming:
        header = incoming.strip().lower()
        match = _TRACEPARENT.match(header)
        if match:
            version, trace_id, span_id, _flags = match.groups()
            if version != "ff" and trace_id != _ZERO_TRACE and span_id != _ZERO_SPAN:
                return header
    ids = secrets.token_hex(24)  # trace id and span id from one read of the OS's randomness
    return f"00-{ids[:32]}-{ids[32:]}-00"


def next_traceparent(traceparent: str) -> str:
    """The traceparent to send upstream: the call's trace (`call_traceparent`) continued.

    The gateway is a hop of its own, so it keeps the trace id and flags and puts its own
    span id in the parent field (W3C Trace Context, section 3.2).
    """
    return f"00-{trace_id_of(traceparent)}-{secrets.token_hex(8)}-{traceparent[-2:]}"


def trace_id_of(traceparent: str) -> str:
    """The 32 hex digits of the trace id of a valid `traceparent`."""
    return traceparent[3:35]
