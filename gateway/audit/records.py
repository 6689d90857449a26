"""What the audit log keeps about a call and about the gateway itself.

A call leaves a `decision` record (allow, deny or error, with the reason, the policy
version and the request as described below); a forwarded call also leaves an `intent`
record, committed before the upstream is contacted, and an `outcome` record after it.

The request is kept as its headers, query and the SHA-256 of its body; the body itself
only with `audit.record_bodies`. Credential-looking headers and query parameters are
masked, and so are the decision's `redact` paths (`request.body.card_number`,
`request.headers.x-secret`, `*` for every key or item).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import time
from typing import TYPE_CHECKING, Any

from gateway.audit.events import now
from gateway.errors import ErrorCode
from gateway.headers import CREDENTIAL_HEADERS

if TYPE_CHECKING:  # the pipeline imports this module
    from gateway.pipeline.call import Call

MASK = "***"
_MAX_TARGET = 2048

_CREDENTIAL_NAME = re.compile(
    r"auth|token|secret|passw|pwd|cookie|api[-_]?key|credential|signature|private", re.I
)
# Refusals by rule; every other refusal is an error.
_DENIALS = frozenset(
    {
        ErrorCode.POLICY_DENIED,
        ErrorCode.SWITCHED_OFF,
        ErrorCode.RATE_LIMITED,
        ErrorCode.BUDGET_EXHAUSTED,
        ErrorCode.LOOP_DETECTED,
    }
)


@functools.lru_cache(maxsize=256)
def _masked_name(name: str, credential_header: str | None) -> bool:
    """Whether a header or query parameter named `name` (lower case) may hold a secret."""
    return (
        name in CREDENTIAL_HEADERS
        or name == credential_header
        or _CREDENTIAL_NAME.search(name) is not None
    )


def _call_fields(call: Call, kind: str) -> dict[str, Any]:
    headers = call.request.headers
    return {
        "kind": kind,
        "time": now(),
        "request_id": call.request_id,
        "agent": call.agent.id if call.agent else None,
        "model": headers.get("X-Agent-Model"),
        "session": headers.get("X-Agent-Session"),
        "tool": call.tool.name if call.tool else None,
        "method": call.request.method,
        "path": call.path if call.tool else None,
        # Before routing there is no tool path: keep what the agent asked for.
        **({} if call.tool else {"target": call.request.raw_path[:_MAX_TARGET]}),
        **({"mcp": call.mcp.as_record()} if call.mcp is not None else {}),
    }


def _query(call: Call, extra: str | None) -> dict[str, list[str]]:
    if call.input is None:
        return {}
    query: dict[str, list[str]] = call.input["request"]["query"]
    return {
        name: [MASK] * len(values) if _masked_name(name.lower(), extra) else values
        for name, values in query.items()
    }


def _request(call: Call, record_bodies: bool) -> dict[str, Any]:
    credentials = call.tool.credentials if call.tool else None
    credential = credentials.header.lower() if credentials else None
    headers: dict[str, str] = {}
    for name, value in call.headers:
        key = name.lower()
        shown = MASK if _masked_name(key, credential) else value
        headers[key] = f"{headers[key]}, {shown}" if key in headers else shown
    request: dict[str, Any] = {
        "headers": headers,
        "query": _query(call, credential),
        "size": len(call.body),
        "body_sha256": hashlib.sha256(call.body).hexdigest(),
    }
    if record_bodies and call.body:
        parsed = call.input["request"]["body"] if call.input else None
        if parsed is not None:
            request["body"] = parsed
        else:
            try:
                request["body_text"] = call.body.decode()
            except UnicodeDecodeError:
                request["body_base64"] = base64.b64encode(call.body).decode()
    if call.decision is not None and call.decision.redact:
        view = redact_paths({"request": request}, call.decision.redact)
        request = view["request"]
    return request


def redact_paths(document: dict[str, Any], paths: tuple[str, ...]) -> dict[str, Any]:
    """`document` with each dotted path's value replaced by MASK; the input is not changed.

    A path into a body that was kept as text or base64 (not JSON) masks that whole body.
    """
    for path in paths:
        parts = path.split(".")
        document = _redact(document, parts)
        if parts[:2] == ["request", "body"] and len(parts) > 2:
            request = document.get("request", {})
            for raw in ("body_text", "body_base64"):
                if raw in request:
                    document = _redact(document, ["request", raw])
    return document


def _redact(value: Any, parts: list[str]) -> Any:
    if not parts:
        return MASK
    head, rest = parts[0], parts[1:]
    if isinstance(value, dict):
        keys = list(value) if head == "*" else [head] if head in value else []
        if not keys:
            return value
        changed = dict(value)
        for key in keys:
            changed[key] = _redact(value[key], rest)
        return changed
    if isinstance(value, list):
        if head == "*":
            indexes = list(range(len(value)))
        elif head.isdigit() and int(head) < len(value):
            indexes = [int(head)]
        else:
            return value
        changed_list = list(value)
        for index in indexes:
            changed_list[index] = _redact(value[index], rest)
        return changed_list
    return value


def decision_record(
    call: Call,
    record_bodies: bool,
    *,
    code: str | None = None,
    reason: str | None = None,
    status: int | None = None,
) -> dict[str, Any]:
    """The gateway's decision on a call: `allow` (no code) or a refusal with its code."""
    decision = call.decision
    if call.action_id is not None:
        verdict = "approval_required"
    elif code is None or code == "replayed":
        verdict = "allow"
    elif code in _DENIALS:
        verdict = "deny"
    else:
        verdict = "error"
    record = _call_fields(call, "decision")
    record.update(
        decision=verdict,
        code=code,
        reason=reason if reason is not None else (decision.reason if decision else None),
        policy_version=decision.policy_version if decision else None,
        policy_allow=decision.allow if decision else None,
        policy_approval_required=decision.approval_required if decision else None,
        roles=list(call.agent.roles) if call.agent else None,
        tags=decision.tags if decision else {},
        status=status,
        action_id=call.action_id,
        timings={
            "policy_ms": call.policy_ms,
            "total_ms": round((time.perf_counter() - call.received) * 1000, 3),
        },
        request=_request(call, record_bodies) if call.tool else None,
    )
    return record


def shadow_record(call: Call, disagreement: dict[str, Any]) -> dict[str, Any]:
    """The shadow policy set would have decided this call otherwise (nothing enforced)."""
    record = _call_fields(call, "shadow_disagreement")
    record.update(disagreement)
    return record


def intent_record(call: Call) -> dict[str, Any]:
    """Written before the upstream is contacted: this call is about to be sent."""
    record = _call_fields(call, "intent")
    record["upstream"] = str(call.upstream_url.origin()) if call.upstream_url else None
    return record


def outcome_record(call: Call, status: int, error: str | None) -> dict[str, Any]:
    """Written after the upstream answered (or failed): what came of the intent."""
    record = _call_fields(call, "outcome")
    record.update(
        status=status,
        upstream_status=call.upstream_status,
        error=error,
        bytes=call.sent_bytes,
        timings={
            "upstream_ms": call.upstream_ms,
            "total_ms": round((time.perf_counter() - call.received) * 1000, 3),
        },
    )
    return record
