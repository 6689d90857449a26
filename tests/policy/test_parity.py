"""Decision parity over a few thousand seeded inputs (tests/support/policy_inputs.py).

- The default policy (policies/gateway.rego) decides exactly as the release before its
  rewrite for speed (reference_gateway.rego, kept verbatim next to this file): whole
  decision objects, reasons included, and errors where it errored; on the embedded engine,
  with the shipped grants and with wider grants (MCP tools, glob syntax, empty path lists).
- The default policy and every example policy set decide the same on the embedded engine as
  the gateway builds it and on real OPA (docs/policies.md, "OPA as a sidecar"), for inputs
  shaped as the gateway builds them. Without an `opa` binary that half skips, saying so.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.policy.decision import Decision, parse_decision
from gateway.policy.embedded import EmbeddedEngine
from gateway.policy.errors import PolicyError
from gateway.policy.loader import PolicySet, read_policy_dir
from gateway.policy.opa import OpaEngine
from gateway.policy.regorus_engine import build_engine
from tests.support.opa import RealOpa, opa_binary
from tests.support.policy_inputs import policy_grid, policy_inputs

DEFAULT_POLICIES = Path(__file__).resolve().parents[2] / "policies"
REFERENCE = Path(__file__).with_name("reference_gateway.rego")
EXAMPLES = sorted(p.name for p in (DEFAULT_POLICIES / "examples").iterdir() if p.is_dir())
DECISION_RULES = ["data.gateway.decision"] + [f"data.examples.{name}.decision" for name in EXAMPLES]

INPUTS = policy_inputs(seed=20261203, count=3000)
GRID = policy_grid()
OPA_INPUTS = 300  # shaped inputs sent to real OPA, each to every decision rule

# Grants beyond the shipped ones, for the branches they do not reach: MCP tool lists (empty
# too), operation lists (empty too), path globs with syntax ({a,b}, [ab], ?, **), an empty
# path list, a role without grants.
WIDE_GRANTS = {
    "support": {
        "demo": {"methods": ["GET", "POST"], "paths": ["/tickets", "/tickets/*"]},
        "payments-mcp": {"methods": ["POST", "GET", "DELETE"], "mcp_tools": ["lookup_order"]},
        "payments": {"methods": ["POST"], "paths": ["/v1/refunds"]},
    },
    "auditor": {"demo": {"methods": ["GET", "HEAD"]}, "payments-mcp": {"methods": ["POST"]}},
    "developer": {
        "demo": {
            "methods": ["GET", "PUT"],
            "paths": ["/tickets/**", "/x/[ab]", "/files/{a,b}", "/lit?", "/tickets/[x]"],
        },
        "github": {"methods": ["GET", "POST"], "paths": ["/repos/*/*/pulls", "/repos/*/*/pulls/*"]},
        "cms": {"methods": ["GET"], "paths": []},
        "payments": {
            "methods": ["GET", "POST", "DELETE"],
            "operations": ["listRefunds", "getRefund"],
        },
    },
    "editor": {
        "cms": {
            "methods": ["GET", "POST", "PUT"],
            "paths": ["/drafts", "/drafts/*", "/pages/**"],
            "mcp_tools": ["search"],
        }
    },
    "release-manager": {
        "payments-mcp": {"methods": ["POST"], "mcp_tools": []},
        "github": {"methods": ["GET", "POST", "PUT"], "operations": ["pulls/list", "pulls/merge"]},
        "payments": {"methods": ["POST"], "paths": ["/v1/refunds"], "operations": []},
    },
    "finance": {},
}


def decide_all(engine: Any, rule: str, docs: list[dict[str, Any]]) -> list[Any]:
    """Each document's raw decision (the input given as JSON text, as EmbeddedEngine.decide
    gives it), or "error"."""
    answers = []
    for doc in docs:
        try:
            engine.set_input_json(orjson.dumps(doc).decode())
            answers.append(engine.eval_rule(rule))
        except Exception:
            answers.append("error")
    return answers


def differences(docs: list[dict[str, Any]], left: Sequence[Any], right: Sequence[Any]) -> list[str]:
    return [
        f"input {json.dumps(doc, ensure_ascii=False)}\n  one:   {a!r}\n  other: {b!r}"
        for doc, a, b in zip(docs, left, right, strict=True)
        if a != b
    ]


def branch(decision: Any) -> str:
    """Which part of the default policy answered (by the reference's reasons)."""
    if not isinstance(decision, dict):
        return str(decision)
    reason = decision["reason"]
    if decision["allow"]:
        return "allow"
    if " is no operation of tool " in reason:
        return "no operation"
    for prefix, name in (
        ("operation ", "operation not granted"),
        ("the ", "method override"),
        ("agent ", "tool not granted"),
        ("method ", "method not granted"),
        ("MCP tool ", "MCP tool not granted"),
        ("no rule ", "default"),
    ):
        if reason.startswith(prefix):
            return name
    return "path not granted"


@pytest.mark.parametrize("grants", ["shipped", "wide"])
def test_default_policy_decides_as_the_release_before_its_rewrite(grants: str) -> None:
    data = {
        "grants": WIDE_GRANTS
        if grants == "wide"
        else read_policy_dir(DEFAULT_POLICIES).data["grants"]
    }
    docs = [doc for _, doc in INPUTS + GRID]
    rewritten = build_engine(
        (("gateway.rego", (DEFAULT_POLICIES / "gateway.rego").read_text()),), data
    )
    reference = build_engine((("gateway.rego", REFERENCE.read_text()),), data)
    expected = decide_all(reference, "data.gateway.decision", docs)
    got = decide_all(rewritten, "data.gateway.decision", docs)

    branches = Counter(branch(d) for d in expected)
    wanted = {
        "allow",
        "method override",
        "tool not granted",
        "method not granted",
        "path not granted",
        "default",
        "error",
    }
    if grants == "wide":
        wanted |= {"MCP tool not granted", "operation not granted", "no operation"}
    assert wanted <= set(branches), f"the inputs miss branches: {branches}"
    mismatches = differences(docs, got, expected)
    assert not mismatches, f"{len(mismatches)} of {len(docs)} decisions differ, e.g.\n" + "\n".join(
        mismatches[:5]
    )


def outcome(decision: Decision | str) -> str:
    return decision if isinstance(decision, str) else decision.outcome


@pytest.fixture(scope="module")
def served() -> PolicySet:
    return read_policy_dir(DEFAULT_POLICIES)


@pytest.fixture(scope="module")
def embedded_answers(served: PolicySet) -> dict[str, list[Decision | str]]:
    """The gateway's embedded engine's decisions for the shaped inputs, per decision rule,
    serving the whole folder; "error" where it could not decide."""
    docs = [doc for shaped, doc in INPUTS if shaped]
    answers: dict[str, list[Decision | str]] = {}
    for rule in DECISION_RULES:
        engine = EmbeddedEngine(decision_rule=rule)
        engine.load(served)
        answers[rule] = []
        for doc in docs:
            try:
                answers[rule].append(engine.decide(doc))
            except PolicyError:
                answers[rule].append("error")
    return answers


def test_inputs_reach_allow_deny_and_approval(
    embedded_answers: dict[str, list[Decision | str]],
) -> None:
    outcomes = Counter(outcome(d) for answers in embedded_answers.values() for d in answers)
    assert {"allow", "deny", "approval"} <= set(outcomes), outcomes
    for rule, answers in embedded_answers.items():
        assert {"allow", "deny"} <= {outcome(d) for d in answers}, rule


async def opa_decide(
    url: str, rule: str, doc: dict[str, Any], version: str, session: aiohttp.ClientSession
) -> Decision | str:
    """OPA's decision, read as the gateway reads any engine's (gateway/policy/decision.py)."""
    path = rule.removeprefix("data.").replace(".", "/")
    async with session.post(
        f"{url}/v1/data/{path}", params={"strict-builtin-errors": "true"}, json={"input": doc}
    ) as response:
        if response.status != 200:
            return "error"
        return parse_decision((await response.json()).get("result"), version)


async def test_embedded_engine_decides_as_opa(
    tmp_path: Path, served: PolicySet, embedded_answers: dict[str, list[Decision | str]]
) -> None:
    if opa_binary() is None:
        pytest.skip(
            "no opa binary on PATH (or CALLGATE_OPA_BIN): the OPA half of the parity test did not run"
        )
    docs = [doc for shaped, doc in INPUTS if shaped][:OPA_INPUTS]
    opa = RealOpa(tmp_path)
    await opa.start()
    pusher = OpaEngine(opa.url, "gateway/decision", timeout_s=10)
    try:
        await pusher.activate(served)  # as the gateway pushes its folder
        async with aiohttp.ClientSession() as session:
            for rule in DECISION_RULES:
                got = [
                    await opa_decide(opa.url, rule, doc, served.policy_version, session)
                    for doc in docs
                ]
                embedded = embedded_answers[rule][:OPA_INPUTS]
                mismatches = differences(docs, embedded, got)
                assert not mismatches, (
                    f"{rule}: {len(mismatches)} of {len(docs)} decisions differ between the "
                    "embedded engine (one) and OPA (other), e.g.\n" + "\n".join(mismatches[:5])
                )
    finally:
        await pusher.close()
        await opa.stop()
