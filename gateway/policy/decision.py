"""The decision document of docs/policies.md (the policy contract), checked strictly.

Only `allow` is required. A decision that is undefined, not an object, has `allow` other
than exactly `true`, or has a known field of the wrong type becomes a deny whose reason
says why, so a policy bug can never turn into an allow. Unknown fields are ignored so
policies may carry their own annotations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Approval:
    roles: tuple[str, ...] = ()
    min_approvals: int = 1
    ttl_s: float | None = None
    summary: str | None = None  # the approvers' one-line headline of the call
    fields: tuple[str, ...] = ()  # dotted body paths approvers see first


@dataclass(frozen=True, slots=True)
class RateLimit:
    key: str
    limit: int
    window_s: float


@dataclass(frozen=True, slots=True)
class Decision:
    allow: bool
    reason: str = ""
    policy_version: str = ""
    approval_required: bool = False
    approval: Approval | None = None
    rate_limits: tuple[RateLimit, ...] = ()
    redact: tuple[str, ...] = ()
    tags: dict[str, Any] = field(default_factory=dict)

    @property
    def outcome(self) -> str:
        return outcome_of(self.allow, self.approval_required)


def outcome_of(allow: bool, approval_required: bool) -> str:
    """allow | approval | deny: what a decision means for the call, in one word."""
    if not allow:
        return "deny"
    return "approval" if approval_required else "allow"


class _Malformed(ValueError):
    pass


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise _Malformed(what)


def _strings(value: Any, what: str) -> tuple[str, ...]:
    _expect(isinstance(value, list) and all(isinstance(v, str) for v in value), what)
    return tuple(value)


def _approval(value: Any) -> Approval | None:
    if value is None:
        return None
    _expect(isinstance(value, dict), "approval must be an object")
    roles = _strings(value.get("roles", []), "approval.roles must be a list of strings")
    min_approvals = value.get("min_approvals", 1)
    _expect(
        isinstance(min_approvals, int)
        and not isinstance(min_approvals, bool)
        and min_approvals >= 1,
        "approval.min_approvals must be an integer >= 1",
    )
    ttl_s = value.get("ttl_s")
    _expect(ttl_s is None or (_is_number(ttl_s) and ttl_s > 0), "approval.ttl_s must be > 0")
    summary = value.get("summary")
    _expect(summary is None or isinstance(summary, str), "approval.summary must be a string")
    fields = _strings(value.get("fields", []), "approval.fields must be a list of strings")
    return Approval(
        roles=roles, min_approvals=min_approvals, ttl_s=ttl_s, summary=summary, fields=fields
    )


def _rate_limits(value: Any) -> tuple[RateLimit, ...]:
    _expect(isinstance(value, list), "rate_limits must be a list")
    limits = []
    for item in value:
        _expect(
            isinstance(item, dict)
            and isinstance(item.get("key"), str)
            and isinstance(item.get("limit"), int)
            and not isinstance(item.get("limit"), bool)
            and item["limit"] >= 0
            and _is_number(item.get("window_s"))
            and item["window_s"] > 0,
            "rate_limits items must be {key: string, limit: integer >= 0, window_s: number > 0}",
        )
        limits.append(RateLimit(item["key"], item["limit"], float(item["window_s"])))
    return tuple(limits)


def parse_decision(raw: Any, policy_version: str) -> Decision:
    """Turn whatever the engine returned into a Decision; anything doubtful denies."""
    if raw is None:
        return Decision(
            False, "no policy decision for this call (the rule is undefined)", policy_version
        )
    try:
        _expect(isinstance(raw, dict), "the decision must be an object")
        allow = raw.get("allow")
        _expect(isinstance(allow, bool), "allow must be a boolean")
        reason = raw.get("reason", "")
        _expect(isinstance(reason, str), "reason must be a string")
        approval_required = raw.get("approval_required", False)
        _expect(isinstance(approval_required, bool), "approval_required must be a boolean")
        tags = raw.get("tags", {})
        _expect(isinstance(tags, dict), "tags must be an object")
        return Decision(
            allow=allow is True,
            reason=reason,
            policy_version=policy_version,
            approval_required=approval_required,
            approval=_approval(raw.get("approval")),
            rate_limits=_rate_limits(raw.get("rate_limits", [])),
            redact=_strings(raw.get("redact", []), "redact must be a list of strings"),
            tags=tags,
        )
    except _Malformed as exc:
        return Decision(False, f"the policy returned a malformed decision: {exc}", policy_version)
