"""The Grafana dashboard and the Prometheus alert rules in deploy/monitoring/
(docs/operations.md, "Monitoring"): promtool checks the rules and runs their unit tests,
parses every dashboard query, and every metric the queries and rules name is one a real
gateway's `/metrics` exposes.

promtool comes with Debian's `prometheus` package; without it these tests skip, and
under CALLGATE_REQUIRE_PROMTOOL=1 (`.ci/run` installs the package and sets it) they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.errors import SPECS, ErrorCode
from tests.support.gateway import REPO
from tests.support.process import Gateway

MONITORING = REPO / "deploy" / "monitoring"
RULES = MONITORING / "callgate-rules.yaml"
RULE_TESTS = MONITORING / "callgate-rules.test.yaml"
DASHBOARD = MONITORING / "callgate-dashboard.json"

# Grafana's variables, as a query would see them once Grafana filled them in.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$job": ".*", "$tool": ".*"}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        why = "promtool is not installed (Debian package prometheus: apt-get install prometheus)"
        if os.environ.get("CALLGATE_REQUIRE_PROMTOOL") == "1":
            pytest.fail(f"{why}, and CALLGATE_REQUIRE_PROMTOOL=1 requires it")
        pytest.skip(why)
    return found


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=MONITORING, capture_output=True, text=True, timeout=120
    )


def rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def dashboard_panels() -> Iterator[dict[str, Any]]:
    def walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", []))

    return walk(json.loads(DASHBOARD.read_text())["panels"])


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard: its panels' and its variables'."""
    queries = [t["expr"] for p in dashboard_panels() for t in p.get("targets", [])]
    for variable in json.loads(DASHBOARD.read_text())["templating"]["list"]:
        if variable["type"] == "query":
            label_values = re.fullmatch(r"label_values\((.+), *\w+\)", variable["definition"])
            assert label_values, variable["definition"]
            queries.append(label_values.group(1))
    return queries


def filled_in(query: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        query = query.replace(variable, value)
    assert "$" not in query, f"a Grafana variable the test does not know: {query}"
    return query


# What PromQL spells with words that are not metrics.
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
             "and", "or", "unless", "inf", "nan"}  # fmt: skip
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def metric_names(query: str) -> set[str]:
    """The metric names a PromQL expression selects: what is left once label matchers,
    ranges, label lists, functions, keywords and numbers are taken out."""
    rest = re.sub(r'"(?:[^"\\]|\\.)*"', '""', query)
    rest = re.sub(r"\{[^}]*\}", " ", rest)
    rest = re.sub(r"\[[^]]*\]", " ", rest)
    rest = _LABEL_LISTS.sub(" ", rest)
    rest = re.sub(r"\b\d[\w.]*", " ", rest)  # numbers and durations (5m, 1e3, 0.99)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][\w:]*", rest):
        function = re.match(r"\s*\(", rest[match.end() :])
        if not function and match.group() not in _KEYWORDS:
            names.add(match.group())
    return names


def test_metric_names_are_found_where_promql_puts_them() -> None:
    query = (
        'histogram_quantile(0.99, sum by (tool, le) (rate(a_seconds_bucket{outcome=~"x|y",'
        ' job="b"}[5m]))) / on (job) group_left (tool) max without (instance) (c:ratio offset 1h)'
        " > bool 0.5 unless d_total"
    )
    assert metric_names(query) == {"a_seconds_bucket", "c:ratio", "d_total"}


def exposed(metrics_text: str) -> set[str]:
    """The sample names `/metrics` has or would have: a labelled metric with no sample yet
    still has its TYPE line, and a counter's or histogram's samples carry prometheus_client's
    suffixes."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count",
                "_created"), "gauge": ("",)}  # fmt: skip
    names = set()
    for family in text_string_to_metric_families(metrics_text):
        names |= {family.name + suffix for suffix in suffixes[family.type]}
        names |= {sample.name for sample in family.samples}
    return names


async def test_the_dashboard_and_the_rules_name_only_metrics_the_gateway_exports(
    tmp_path: Path,
) -> None:
    gateway = Gateway(tmp_path, "http://127.0.0.1:9")
    await gateway.start()
    try:
        url = f"http://127.0.0.1:{gateway.admin_port}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            assert resp.status == 200
            text = await resp.text()
    finally:
        await gateway.stop()
    metrics = exposed(text)
    assert {"callgate_requests_total", "callgate_policy_evaluation_seconds_bucket",
            "callgate_pending_actions"} <= metrics  # fmt: skip
    queries = {"dashboard": dashboard_queries(), "rules": [rule["expr"] for rule in rules()]}
    for source, expressions in queries.items():
        for expression in expressions:
            named = metric_names(expression)
            assert named, f"{source}: no metric found in {expression}"
            assert named <= metrics, f"{source}: {named - metrics} not exported: {expression}"


def test_the_dashboard_shows_what_operators_watch() -> None:
    shown = set().union(*(metric_names(q) for q in dashboard_queries()))
    assert {
        "callgate_requests_total",  # calls by outcome, limiter refusals
        "callgate_policy_evaluation_seconds_bucket",  # decision latency
        "callgate_upstream_duration_seconds_bucket",
        "callgate_pending_actions",
        "callgate_pending_actions_oldest_age_seconds",  # parked age
        "callgate_audit_queued_bytes",  # audit queue depth
    } <= shown
    limiter = {"rate_limited", "budget_exhausted", "loop_detected", "tool_busy"}
    refusals = [q for q in dashboard_queries() if "rate_limited" in q]
    assert refusals and all(_outcomes(q) == limiter for q in refusals)


def _outcomes(query: str) -> set[str]:
    (alternatives,) = re.findall(r'outcome=~"([^"]+)"', query)
    return set(alternatives.split("|"))


def test_the_5xx_alert_counts_every_5xx_error_code_and_nothing_else() -> None:
    (alert,) = [r for r in rules() if r.get("alert") == "CallgateHigh5xxRate"]
    server_errors = {code.value for code, spec in SPECS.items() if spec.status >= 500}
    assert ErrorCode.TOOL_BUSY.value in server_errors
    assert _outcomes(alert["expr"]) == server_errors


def test_every_alert_has_a_unit_test() -> None:
    alerts = {rule["alert"] for rule in rules() if "alert" in rule}
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    assert tested == alerts
    assert alerts == {
        "CallgateAuditUnavailable",
        "CallgatePolicyReloadFailing",
        "CallgateApprovalsWaitingPastHalfTTL",
        "CallgateHigh5xxRate",
    }


def test_promtool_checks_the_rules() -> None:
    result = run_promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout


def test_promtool_runs_the_rules_unit_tests() -> None:
    result = run_promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """Each query, its variables filled in, as a recording rule: `promtool check rules`
    parses them all."""
    queries = dashboard_queries()
    recorded = [
        {"record": f"dashboard:query_{i}", "expr": filled_in(q)} for i, q in enumerate(queries)
    ]
    file = tmp_path / "dashboard-queries.yaml"
    file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))
    result = run_promtool("check", "rules", str(file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout
