"""The decision contract: only `allow: true` allows; anything doubtful denies, saying why."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.policy.decision import Approval, RateLimit, parse_decision


@pytest.mark.parametrize(
    ("raw", "reason_fragment"),
    [
        (None, "undefined"),
        ([], "the decision must be an object"),
        ("allow", "the decision must be an object"),
        (True, "the decision must be an object"),
        ({}, "allow must be a boolean"),
        ({"allow": "true"}, "allow must be a boolean"),
        ({"allow": 1}, "allow must be a boolean"),
        ({"allow": None}, "allow must be a boolean"),
        ({"allow": True, "reason": 5}, "reason must be a string"),
        ({"allow": True, "approval_required": "yes"}, "approval_required must be a boolean"),
        ({"allow": True, "approval": []}, "approval must be an object"),
        ({"allow": True, "approval": {"roles": "finance"}}, "approval.roles"),
        ({"allow": True, "approval": {"min_approvals": 0}}, "approval.min_approvals"),
        ({"allow": True, "approval": {"min_approvals": True}}, "approval.min_approvals"),
        ({"allow": True, "approval": {"ttl_s": -1}}, "approval.ttl_s"),
        ({"allow": True, "approval": {"summary": 5}}, "approval.summary must be a string"),
        ({"allow": True, "approval": {"fields": "amount"}}, "approval.fields"),
        ({"allow": True, "approval": {"fields": [["amount"]]}}, "approval.fields"),
        ({"allow": True, "rate_limits": {}}, "rate_limits must be a list"),
        ({"allow": True, "rate_limits": [{"key": "k", "limit": 1}]}, "rate_limits items"),
        (
            {"allow": True, "rate_limits": [{"key": "k", "limit": 1.5, "window_s": 1}]},
            "rate_limits items",
        ),
        ({"allow": True, "redact": "request.body"}, "redact must be a list of strings"),
        ({"allow": True, "tags": ["risk"]}, "tags must be an object"),
    ],
    ids=[
        "undefined",
        "array",
        "string",
        "bare-true",
        "no-allow",
        "allow-string",
        "allow-one",
        "allow-null",
        "reason-number",
        "approval-required-string",
        "approval-array",
        "approval-roles-string",
        "min-approvals-zero",
        "min-approvals-bool",
        "ttl-negative",
        "summary-number",
        "fields-string",
        "fields-nested-list",
        "rate-limits-object",
        "rate-limit-no-window",
        "rate-limit-float",
        "redact-string",
        "tags-array",
    ],
)
def test_doubtful_decisions_deny_and_say_why(raw: Any, reason_fragment: str) -> None:
    decision = parse_decision(raw, "v1")
    assert decision.allow is False
    assert reason_fragment in decision.reason
    assert decision.policy_version == "v1"


def test_explicit_deny_keeps_the_policy_reason() -> None:
    decision = parse_decision({"allow": False, "reason": "over 1000 EUR needs finance"}, "v")
    assert (decision.allow, decision.reason) == (False, "over 1000 EUR needs finance")


def test_full_decision_is_parsed() -> None:
    decision = parse_decision(
        {
            "allow": True,
            "approval_required": True,
            "reason": "big refund",
            "approval": {
                "roles": ["finance"],
                "min_approvals": 2,
                "ttl_s": 3600,
                "summary": "refund 250 EUR on order A1",
                "fields": ["amount", "order.id"],
            },
            "rate_limits": [{"key": "agent:bot", "limit": 60, "window_s": 60}],
            "redact": ["request.body.card_number"],
            "tags": {"risk": "high"},
            "custom_annotation": {"ignored": True},
        },
        "abc",
    )
    assert decision.allow is True
    assert decision.approval_required is True
    assert decision.approval == Approval(
        roles=("finance",),
        min_approvals=2,
        ttl_s=3600,
        summary="refund 250 EUR on order A1",
        fields=("amount", "order.id"),
    )
    assert decision.rate_limits == (RateLimit("agent:bot", 60, 60.0),)
    assert decision.redact == ("request.body.card_number",)
    assert decision.tags == {"risk": "high"}
    assert decision.policy_version == "abc"


def test_minimal_allow() -> None:
    decision = parse_decision({"allow": True}, "v")
    assert decision.allow is True
    assert decision.approval_required is False
    assert decision.reason == ""
