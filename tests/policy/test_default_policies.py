"""The shipped policies: their Rego unit tests pass with the engine the gateway serves with."""

from __future__ import annotations

import pytest

from gateway.policy.rego_tests import run_rego_tests
from tests.support.gateway import DEFAULT_POLICIES

RESULTS = run_rego_tests(DEFAULT_POLICIES)


def test_default_policies_have_tests() -> None:
    assert len(RESULTS) >= 10


@pytest.mark.parametrize("result", RESULTS, ids=[r.name.rsplit(".", 1)[1] for r in RESULTS])
def test_rego_test_passes(result) -> None:
    assert result.outcome == "pass", f"{result.name} ({result.file}): {result.detail}"


def test_runner_reports_failures_and_errors(tmp_path) -> None:
    (tmp_path / "gateway.rego").write_text(
        'package gateway\n\nimport rego.v1\n\ndecision := {"allow": false}\n'
    )
    (tmp_path / "gateway_test.rego").write_text(
        "package gateway_test\n\nimport rego.v1\n\nimport data.gateway\n\n"
        "test_allows if gateway.decision.allow\n\n"
        "test_denies if not gateway.decision.allow\n\n"
        "test_breaks if 1 / count([]) == 1\n"
    )
    outcomes = {r.name: (r.outcome, r.detail) for r in run_rego_tests(tmp_path)}
    assert outcomes["data.gateway_test.test_allows"] == ("fail", "evaluated to undefined")
    assert outcomes["data.gateway_test.test_denies"] == ("pass", "")
    assert outcomes["data.gateway_test.test_breaks"][0] == "error"
    assert "divide by zero" in outcomes["data.gateway_test.test_breaks"][1]
