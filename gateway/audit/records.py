"""What the audit log keeps about a call and about the gateway itself.

A call leaves a `decision` record (allow, deny or error, with the reason, the policy
version and the request as described below); a forwarded call also leaves an `intent`
record, committed before the upstream is contacted, and an `outcome` record after it; so
does an approved action when it is executed (with its `action_id`).

The request is kept as its headers, query and the SHA-256 of its body; the body itself
only with `audit.record_bodies`. Credential-looking headers and query parameters are
masked, and so are the decision's `redact` paths (`request.body.card_number`,
`request.headers.x-secret`, `*` for every key or item).

What one record keeps of the agent's input (its headers, query, path or target, body,
model and session names, MCP names) is bounded by `audit.max_record_bytes` of JSON: `cap()`
cuts the largest of those fields, and names each one cut in `truncated` with the size and
SHA-256 of what it held (see docs/operations.md, Audit log).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import time
from typing import Any

from gateway.audit.chain import canonical_bytes
from gateway.audit.events import now
from gateway.call import Call
from gateway.errors import ErrorCode
from gateway.headers import CREDENTIAL_HEADERS
from gateway.openapi.operations import MAX_PROBLEMS, Problem

MASK = "***"

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
        "trace_id": call.trace_id,
        "agent": call.agent.id if call.agent else None,
        "model": headers.get("X-Agent-Model"),
        "session": headers.get("X-Agent-Session"),
        "tool": call.tool.name if call.tool else None,
        "method": call.request.method,
        "path": call.path if call.tool else None,
        # Before routing there is no tool path: keep what the agent asked for.
        **({} if call.tool else {"target": call.request.raw_path}),
        **({"mcp": call.mcp.as_record()} if call.mcp is not None else {}),
    }


def _action_fields(action: dict[str, Any], kind: str) -> dict[str, Any]:
    """The fields of `_call_fields` for an approved action's call, from its stored document
    (store/actions.py), with its `action_id`."""
    request = action["request"]
    return {
        "kind": kind,
        "time": now(),
        "request_id": action["request_id"],
        "trace_id": trace_id_of(action),
        "action_id": action["id"],
        "agent": action["agent"],
        "model": action["model"],
        "session": action["session"],
        "tool": action["tool"],
        "method": request["method"],
        "path": request["path"],
    }


def trace_id_of(action: dict[str, Any]) -> str | None:
    """The trace id of the call that parked `action` (None for one parked before actions
    kept their traceparent)."""
    traceparent = action.get("traceparent")
    return traceparent[3:35] if isinstance(traceparent, str) and traceparent else None


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
        if call.form is not None:
            request["form"] = call.form
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


def _operation(call: Call, operation: dict[str, Any]) -> dict[str, Any]:
    """input.operation as a decision record keeps it (for replays): its parameters without
    those named like a credential, as the request's headers and query are kept."""
    credentials = call.tool.credentials if call.tool else None
    credential = credentials.header.lower() if credentials else None
    params = operation["params"]
    kept = {
        "path": params["path"],
        **{
            where: {
                k: v for k, v in params[where].items() if not _masked_name(k.lower(), credential)
            }
            for where in ("query", "header")
        },
    }
    return {**operation, "params": kept}


def redact_paths(document: dict[str, Any], paths: tuple[str, ...]) -> dict[str, Any]:
    """`document` with each dotted path's value replaced by MASK; the input is not changed.

    A path into a body that was kept as text or base64 (not JSON) masks that whole body.
    """
    for path in paths:
        parts = path.split(".")
        document = _redact(document, parts)
        if parts[:2] in (["request", "body"], ["request", "form"]) and len(parts) > 2:
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
    operation = call.input.get("operation") if call.input is not None else None
    if operation is not None:
        record["operation"] = _operation(call, operation)
    agent = call.input["agent"] if call.input is not None else None
    if agent is not None and agent["identity"]["kind"] != "token":
        # A JWT agent: the issuer and verified claims the policy saw, for auditors and replays.
        record.update(identity=agent["identity"], claims=agent["claims"])
    return record


def shadow_record(call: Call, disagreement: dict[str, Any]) -> dict[str, Any]:
    """The shadow policy set would have decided this call otherwise (nothing enforced)."""
    record = _call_fields(call, "shadow_disagreement")
    record.update(disagreement)
    return record


def schema_record(
    call: Call, where: str, problems: list[Problem], mode: str, record_bodies: bool
) -> dict[str, Any]:
    """The call (where=request) or the tool's answer (where=response) does not match the
    tool's OpenAPI document; `mode` says whether it was refused (enforce) or let through
    (report). A problem's message may quote a value of the body, so it is kept only with
    `record_bodies`; its pointer and keyword always are."""
    record = _call_fields(call, "schema_violation")
    operation = call.resolved.operation if call.resolved is not None else None
    record.update(
        where=where,
        mode=mode,
        operation=operation.id if operation is not None else None,
        problems=[
            {
                "pointer": p.pointer,
                "keyword": p.keyword,
                **({"message": p.message} if record_bodies else {}),
            }
            for p in problems[:MAX_PROBLEMS]
        ],
    )
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
    if call.redacted:  # secrets replaced in the answer, by kind
        record["redacted"] = dict(call.redacted)
    return record


def action_intent_record(action: dict[str, Any], upstream: str) -> dict[str, Any]:
    """Written before an approved action's stored request is sent to `upstream`."""
    record = _action_fields(action, "intent")
    record["upstream"] = upstream
    return record


def action_outcome_record(action: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """Written after an approved action's request was answered (or failed): its `result`
    as the action keeps it (approvals/execution.py)."""
    record = _action_fields(action, "outcome")
    record.update(
        status=result.get("status"),
        upstream_status=result.get("status"),
        error=result.get("error"),
        bytes=result.get("size", 0),
    )
    if result.get("redacted"):
        record["redacted"] = result["redacted"]
    return record


def unsent_outcome(intent: dict[str, Any], status: int, error: str) -> dict[str, Any]:
    """Closes an intent that was committed after its call had given up waiting for it: the
    call was refused (`status`, `error`) and never sent."""
    record = {name: intent.get(name) for name in _UNSENT_FIELDS if name in intent}
    record.update(kind="outcome", time=now(), status=status, error=error, sent=False)
    return record


_UNSENT_FIELDS = (
    *("request_id", "trace_id", "action_id", "agent", "model", "session", "tool", "method", "path"),
    *("target", "mcp"),
)

# What the agent chose, by where it sits in a record; the rest the gateway wrote itself.
_AGENT_FIELDS = ("path", "target", "model", "session", "mcp", "operation")
_AGENT_REQUEST_FIELDS = ("headers", "query", "body", "form", "body_text", "body_base64")
# A field whose share is smaller than this is left out rather than cut to nothing.
_MIN_KEPT = 16


def cap(record: dict[str, Any], budget: int) -> dict[str, Any]:
    """`record` keeping at most `budget` bytes of JSON of the agent's input.

    The budget is shared: fields smaller than an equal share are kept whole and leave the
    rest to the larger ones, which are cut to their share: text to a prefix, headers and
    query parameters entry by entry (each cut the same way), a JSON body or form left out whole
    (a part of one could replay as another request). Each field cut is named in
    `truncated`, as `{"<field>": {"bytes": <size>, "sha256": <hex>}}` of the JSON it held
    (`request.headers`, `path`, ...). The record is changed in place and returned.
    """
    request = record.get("request")
    if not isinstance(request, dict):
        request = {}
    holders: list[tuple[dict[str, Any], str, str]] = []
    texts: list[bytes] = []
    for holder, names, prefix in (
        (record, _AGENT_FIELDS, ""),
        (request, _AGENT_REQUEST_FIELDS, "request."),
    ):
        for name in names:
            value = holder.get(name)
            if value is not None:
                holders.append((holder, name, prefix + name))
                texts.append(canonical_bytes(value))
    if sum(len(text) for text in texts) <= budget:
        return record
    sizes = [len(text) for text in texts]
    truncated: dict[str, Any] = {}
    for (holder, name, label), text, size, share in zip(
        holders, texts, sizes, _shares(sizes, budget, [_MIN_KEPT] * len(sizes)), strict=True
    ):
        if size <= share:
            continue
        truncated[label] = {"bytes": size, "sha256": hashlib.sha256(text).hexdigest()}
        kept = None if label in ("request.body", "request.form") else _fit(holder[name], share)
        if label == "request.body_base64" and kept is not None:
            kept = kept[: len(kept) // 4 * 4]  # whole groups: the prefix still decodes
        if not kept:
            del holder[name]
        else:
            holder[name] = kept
    record["truncated"] = truncated
    return record


def _shares(sizes: list[int], budget: int, least: list[int]) -> list[int]:
    """Each size's share of `budget`: sizes under an equal share are kept whole and what
    they leave is shared equally by the others, which are cut. When that equal share is
    too small to keep anything of one (under its `least`), the last ones in order are left
    out (share 0) until it is not."""

    def fits(count: int) -> bool:
        shares = _water_fill(sizes[:count], budget)
        return all(
            share == size or share >= minimum
            for size, share, minimum in zip(sizes, shares, least, strict=False)
        )

    kept, over = 0, len(sizes) + 1  # fits(kept) holds (no entries always fit), fits(over) not
    while over - kept > 1:
        middle = (kept + over) // 2
        kept, over = (middle, over) if fits(middle) else (kept, middle)
    return _water_fill(sizes[:kept], budget) + [0] * (len(sizes) - kept)


def _water_fill(sizes: list[int], budget: int) -> list[int]:
    shares = [0] * len(sizes)
    left = budget
    for rank, index in enumerate(sorted(range(len(sizes)), key=sizes.__getitem__)):
        shares[index] = min(sizes[index], left // (len(sizes) - rank))
        left -= shares[index]
    return shares


def _fit(value: Any, limit: int) -> Any:
    """`value` cut to about `limit` bytes of JSON; None when nothing of it fits."""
    if limit < _MIN_KEPT:
        return None
    if isinstance(value, str):
        return _cut_text(value, limit)
    if isinstance(value, list):
        return [item for _, item in _fit_items(list(enumerate(value)), limit - 2, keyed=False)]
    if isinstance(value, dict):
        return dict(_fit_items(list(value.items()), limit - 2, keyed=True))
    return value if len(canonical_bytes(value)) <= limit else None


def _fit_items(items: list[tuple[Any, Any]], limit: int, *, keyed: bool) -> list[tuple[Any, Any]]:
    """The entries of a dict (or the items of a list) in their order, cut to share `limit`."""
    overheads = [len(canonical_bytes(key)) + 2 if keyed else 1 for key, _ in items]
    sizes = [
        overhead + len(canonical_bytes(item))
        for overhead, (_, item) in zip(overheads, items, strict=True)
    ]
    least = [overhead + _MIN_KEPT for overhead in overheads]
    kept = []
    for (key, item), overhead, size, share in zip(
        items, overheads, sizes, _shares(sizes, limit, least), strict=True
    ):
        if size <= share:
            kept.append((key, item))
            continue
        cut = _fit(item, share - overhead)
        if cut is not None:
            kept.append((key, cut))
    return kept


def _cut_text(text: str, limit: int) -> str | None:
    """The longest prefix of `text` (nearly) whose JSON string fits in `limit` bytes."""
    length = min(len(text), limit)
    while length > 0:
        size = len(canonical_bytes(text[:length]))
        if size <= limit:
            return text[:length]
        length = min(length - 1, length * limit // size)
    return None
