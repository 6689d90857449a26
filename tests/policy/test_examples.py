"""The example policies of policies/examples: each folder's Rego tests pass, each example is
served from the whole `policies/` folder (default policy included) as its own decision rule,
and decides realistic calls, built like the input of docs/policies.md (the policy contract),
with its shipped data."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.policy import rego_tests
from gateway.policy.decision import Approval, RateLimit
from gateway.policy.embedded import EmbeddedEngine

# The repository's policies folder, as served (tests.support.gateway.DEFAULT_POLICIES; not
# imported, so that mypy --strict checks this file alone).
DEFAULT_POLICIES = Path(__file__).resolve().parents[2] / "policies"
EXAMPLES_DIR = DEFAULT_POLICIES / "examples"
EXAMPLES = sorted(p.name for p in EXAMPLES_DIR.iterdir() if p.is_dir())

MONDAY_11_BERLIN = "2026-11-23T10:00:00Z"


def call(
    tool: str,
    method: str,
    path: str,
    *,
    agent: str = "support-bot",
    roles: tuple[str, ...] = ("support",),
    body: Any = None,
    headers: dict[str, str] | None = None,
    query: dict[str, list[str]] | None = None,
    session: str | None = None,
    time: str = MONDAY_11_BERLIN,
) -> dict[str, Any]:
    """A policy input document as the gateway builds it (docs/policies.md, "Input")."""
    return {
        "agent": {"id": agent, "roles": list(roles)},
        "tool": {"name": tool, "kind": "http"},
        "request": {
            "method": method,
            "path": path,
            "query": query or {},
            "headers": {"content-type": "application/json", **(headers or {})},
            "body": body,
            "size": 0 if body is None else len(json.dumps(body)),
        },
        "mcp": None,
        "context": {
            "request_id": "01JCALLGATEEXAMPLE",
            "time": time,
            "session": session,
            "model": "gpt-x-2026-10",
        },
    }


@dataclass(frozen=True)
class Case:
    example: str
    name: str
    input: dict[str, Any]
    allow: bool
    reason: str
    approval_required: bool = False
    # Further Decision attributes to compare, e.g. {"approval": Approval(...)}.
    also: dict[str, Any] = field(default_factory=dict)


CASES = [
    # --- env_matrix: environment x role x tool --------------------------------------
    Case(
        "env_matrix",
        "staging-developer-deploys",
        call("deploys", "POST", "/deployments", agent="dev-bot", roles=("developer",)),
        allow=True,
        reason="in staging, role developer may call POST on deploys",
        also={"tags": {"environment": "staging"}},
    ),
    Case(
        "env_matrix",
        "production-deploy-needs-sre",
        call("deploys-prod", "POST", "/deployments", agent="rm-bot", roles=("release-manager",)),
        allow=True,
        approval_required=True,
        reason="in production, POST on deploys-prod needs approval by sre (granted to role release-manager)",
        also={"approval": Approval(roles=("sre",), min_approvals=1)},
    ),
    Case(
        "env_matrix",
        "support-may-not-deploy-production",
        call("deploys-prod", "POST", "/deployments"),
        allow=False,
        reason="in production, agent support-bot (roles: support) may not call POST on deploys-prod; in production it may call: db-prod (GET)",
    ),
    Case(
        "env_matrix",
        "agent-believes-it-is-in-development",
        call(
            "deploys",
            "POST",
            "/deployments",
            roles=("developer",),
            headers={"x-environment": "development"},
        ),
        allow=False,
        reason="tool deploys is in the staging environment, but the X-Environment header says development; nothing was sent",
    ),
    # --- research_phase: read-only until promoted ----------------------------------
    Case(
        "research_phase",
        "read",
        call("demo", "GET", "/tickets", session="sess-1"),
        allow=True,
        reason="research phase: GET is a read",
    ),
    Case(
        "research_phase",
        "write-before-promotion",
        call("demo", "POST", "/tickets", body={"title": "x"}, session="sess-1"),
        allow=False,
        reason="this agent is in its read-only research phase: only GET, HEAD calls are allowed; session sess-1 has not been promoted to make changes",
    ),
    Case(
        "research_phase",
        "promoted-session-writes",
        call("demo", "POST", "/tickets", body={"title": "x"}, session="sess-2026-11-23-refunds"),
        allow=True,
        reason="session sess-2026-11-23-refunds of agent support-bot is promoted past the research phase",
    ),
    Case(
        "research_phase",
        "promotion-belongs-to-one-agent",
        call("demo", "POST", "/tickets", agent="audit-bot", session="sess-2026-11-23-refunds"),
        allow=False,
        reason="this agent is in its read-only research phase: only GET, HEAD calls are allowed; session sess-2026-11-23-refunds has not been promoted to make changes",
    ),
    # --- draft_commit: drafts free, commits approved ------------------------------
    Case(
        "draft_commit",
        "draft",
        call("cms", "POST", "/drafts", body={"title": "Q4 report"}),
        allow=True,
        reason="POST /drafts on cms writes a draft",
    ),
    Case(
        "draft_commit",
        "merge-needs-two-maintainers",
        call("github", "PUT", "/repos/acme/website/pulls/12/merge", body={}),
        allow=True,
        approval_required=True,
        reason="PUT /repos/acme/website/pulls/12/merge on github commits work: it needs approval by maintainer; writes to drafts (/repos/*/*/git/refs, /repos/*/*/pulls, /repos/*/*/pulls/*, /repos/*/*/issues/*/comments) need none",
        also={"approval": Approval(roles=("maintainer",), min_approvals=2, ttl_s=3600)},
    ),
    Case(
        "draft_commit",
        "neither-draft-nor-commit",
        call("cms", "DELETE", "/settings"),
        allow=False,
        reason="DELETE /settings on cms is neither a draft nor a commit endpoint; drafts: /drafts, /drafts/*, /drafts/*/assets/**; commits (need approval): /drafts/*/publish, /pages/**",
    ),
    # --- money: thresholds per currency ------------------------------------------
    Case(
        "money",
        "small-refund",
        call("payments", "POST", "/v1/refunds", body={"amount": 50, "currency": "EUR"}),
        allow=True,
        reason="50 EUR is within the 1000 EUR agents may move without approval",
        also={"rate_limits": (RateLimit("money:support-bot", 20, 3600.0),)},
    ),
    Case(
        "money",
        "refund-needs-finance",
        call("payments", "POST", "/v1/refunds", body={"amount": 1200, "currency": "EUR"}),
        allow=True,
        approval_required=True,
        reason="payments over 1000 EUR need finance approval (this call: 1200 EUR)",
        also={
            "approval": Approval(
                roles=("finance",),
                min_approvals=1,
                ttl_s=3600,
                summary="POST /v1/refunds · 1200 EUR",
                fields=("amount", "currency"),
            ),
            "tags": {"money": True, "risk": "high", "amount": 1200, "currency": "EUR"},
        },
    ),
    Case(
        "money",
        "payout-over-the-ceiling",
        call("payments", "POST", "/v1/payouts", body={"amount": "25000.00", "currency": "usd"}),
        allow=False,
        reason="amounts over 10000 USD are never sent by agents (this call: 25000 USD); ask a human to make it",
    ),
    Case(
        "money",
        "unknown-currency",
        call("payments", "POST", "/v1/refunds", body={"amount": 5, "currency": "XBT"}),
        allow=False,
        reason="currency XBT has no thresholds in this policy; known currencies: EUR, GBP, JPY, USD",
    ),
    # --- business_hours: writes Monday to Friday, 09:00-18:00 Berlin ---------------
    Case(
        "business_hours",
        "monday-morning-write",
        call("demo", "POST", "/tickets", body={"title": "x"}),
        allow=True,
        reason="POST is allowed during business hours (Monday 11:00 Europe/Berlin)",
    ),
    Case(
        "business_hours",
        "saturday-write",
        call("demo", "POST", "/tickets", time="2026-11-28T10:00:00Z"),
        allow=False,
        reason="POST is only allowed during business hours; business hours are Monday, Tuesday, Wednesday, Thursday, Friday, 09:00 to 18:00 Europe/Berlin, except holidays; it is now Saturday 11:00 Europe/Berlin; reads (GET, HEAD, OPTIONS) are allowed at any time",
    ),
    Case(
        "business_hours",
        "christmas-eve-write",
        call("demo", "PATCH", "/tickets/1", time="2026-12-24T10:00:00Z"),
        allow=False,
        reason="PATCH is only allowed during business hours; business hours are Monday, Tuesday, Wednesday, Thursday, Friday, 09:00 to 18:00 Europe/Berlin, except holidays; it is now Thursday 11:00 Europe/Berlin (a holiday); reads (GET, HEAD, OPTIONS) are allowed at any time",
    ),
    Case(
        "business_hours",
        "sunday-night-read",
        call("demo", "GET", "/tickets", time="2026-11-29T23:00:00Z"),
        allow=True,
        reason="GET is a read, allowed at any time",
    ),
    # --- arg_allowlist: which repositories, projects, URLs -----------------------
    Case(
        "arg_allowlist",
        "listed-repository",
        call("github", "GET", "/repos/acme/docs/issues", query={"state": ["open"]}),
        allow=True,
        reason="every restricted argument of this github call is allowed (repository acme/docs)",
    ),
    Case(
        "arg_allowlist",
        "other-repository",
        call("github", "POST", "/repos/acme/payroll/issues", body={"title": "x"}),
        allow=False,
        reason="repository acme/payroll is not allowed on tool github; allowed: acme/website, acme/docs, acme-sandbox/*",
    ),
    Case(
        "arg_allowlist",
        "documentation-url",
        call("fetch", "POST", "/", body={"url": "https://docs.python.org/3/library/json.html"}),
        allow=True,
        reason="every restricted argument of this fetch call is allowed (url https://docs.python.org/3/library/json.html)",
    ),
    Case(
        "arg_allowlist",
        "lookalike-url",
        call("fetch", "POST", "/", body={"url": "https://docs.python.org.evil.example/x"}),
        allow=False,
        reason="url https://docs.python.org.evil.example/x is not allowed on tool fetch; allowed: https://docs.python.org/**, https://developer.mozilla.org/**",
    ),
    # --- pii_guard: card numbers only to the payment tool ------------------------
    Case(
        "pii_guard",
        "card-in-a-ticket",
        call(
            "demo",
            "POST",
            "/tickets",
            body={"title": "refund", "body": "customer card 4111 1111 1111 1111 exp 12/26"},
        ),
        allow=False,
        reason="the request carries what looks like a payment card number (at request.body.body); card numbers may only be sent to payments; remove it and send the call again",
        also={"redact": ("request.body.body",)},
    ),
    Case(
        "pii_guard",
        "card-to-payments",
        call("payments", "POST", "/v1/charges", body={"card": {"number": "5555555555554444"}}),
        allow=True,
        reason="card number at request.body.card.number may go to payment tool payments; it is masked in the audit log",
        also={"redact": ("request.body.card.number",)},
    ),
    Case(
        "pii_guard",
        "order-number-is-not-a-card",
        call("demo", "POST", "/tickets", body={"title": "order 1234567890123 is late"}),
        allow=True,
        reason="no payment card number in the request",
    ),
]


@functools.cache
def served(example: str) -> EmbeddedEngine:
    """The whole policies folder, served with this example's decision rule."""
    engine = EmbeddedEngine(decision_rule=f"data.examples.{example}.decision")
    engine.load(DEFAULT_POLICIES)
    return engine


@functools.cache
def rego_results(example: str) -> list[rego_tests.TestResult]:
    return rego_tests.run_rego_tests(EXAMPLES_DIR / example)


def test_the_library_has_the_examples_the_readme_describes() -> None:
    assert len(EXAMPLES) >= 7
    readme = (EXAMPLES_DIR / "README.md").read_text(encoding="utf-8")
    for example in EXAMPLES:
        assert f"policy.decision: examples/{example}/decision" in readme, example


def test_every_example_has_realistic_cases() -> None:
    assert {case.example for case in CASES} == set(EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES)
def test_rego_tests_of_the_example_pass(example: str) -> None:
    results = rego_results(example)
    assert len(results) >= 4, f"{example} has only {len(results)} Rego tests"
    failed = [
        f"{r.name} ({r.file}): {r.outcome} {r.detail}" for r in results if r.outcome != "pass"
    ]
    assert not failed, "\n".join(failed)


def _packages(path: Path) -> list[str]:
    return re.findall(r"^package\s+(\S+)", path.read_text(encoding="utf-8"), re.MULTILINE)


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_lives_in_its_own_package(example: str) -> None:
    """Data files land at data.<folder path>, so the package must match the folder: that
    puts the example's data under its own package, away from the other examples."""
    folder = EXAMPLES_DIR / example
    modules = [p for p in folder.rglob("*.rego") if not p.name.endswith("_test.rego")]
    tests = list(folder.rglob("*_test.rego"))
    assert modules and tests
    for path in modules:
        assert _packages(path) == [f"examples.{example}"], path
    for path in tests:
        assert _packages(path) == [f"examples.{example}_test"], path


def _data_keys(folder: Path) -> set[str]:
    keys: set[str] = set()
    for path in folder.iterdir():
        if path.suffix == ".json":
            keys |= set(json.loads(path.read_text(encoding="utf-8")))
        elif path.suffix in (".yaml", ".yml"):
            keys |= set(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    return keys


_RULE_HEAD = re.compile(r"^(?:default\s+)?([A-Za-z_]\w*)", re.MULTILINE)


@pytest.mark.parametrize("example", EXAMPLES)
def test_no_rule_shares_a_name_with_a_data_key(example: str) -> None:
    """A rule and a data key of the same name are both data.examples.<name>.<key>;
    regorus does not refuse that, it silently serves one of them."""
    folder = EXAMPLES_DIR / example
    rules: set[str] = set()
    for path in folder.glob("*.rego"):
        if not path.name.endswith("_test.rego"):
            rules |= set(_RULE_HEAD.findall(path.read_text(encoding="utf-8")))
    rules -= {"package", "import", "else"}
    assert "decision" in rules
    assert not rules & _data_keys(folder)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.example}-{c.name}" for c in CASES])
def test_example_decides_a_realistic_call(case: Case) -> None:
    decision = served(case.example).decide(case.input)
    assert (decision.allow, decision.approval_required, decision.reason) == (
        case.allow,
        case.approval_required,
        case.reason,
    )
    for name, expected in case.also.items():
        assert getattr(decision, name) == expected, name


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_denies_an_empty_input(example: str) -> None:
    decision = served(example).decide({})
    assert decision.allow is False
    assert decision.reason


ODD_INPUTS = {
    "bare-request": {"request": {}},
    "odd-values": call("demo", "POST", "/", body=[1, "x", None, {"amount": "007"}], time=""),
    "odd-types": call("payments", "POST", "/v1/refunds", body={"amount": "1e999"}, time="1"),
}


@pytest.mark.parametrize("example", EXAMPLES)
@pytest.mark.parametrize("doc", ODD_INPUTS.values(), ids=ODD_INPUTS.keys())
def test_example_decides_odd_inputs_without_an_engine_error(
    example: str, doc: dict[str, Any]
) -> None:
    """An engine error would answer 503 policy_unavailable: safe, but not a reason."""
    assert served(example).decide(doc).reason


def test_examples_leave_the_default_decision_alone() -> None:
    engine = EmbeddedEngine()
    engine.load(DEFAULT_POLICIES)
    decision = engine.decide(call("demo", "GET", "/tickets"))
    assert (decision.allow, decision.reason) == (True, "role support may call GET /tickets on demo")
