"""Run the Rego unit tests of a policy set: every `test_*` rule must evaluate to true.

This is the workflow of `opa test`: tests live in `*_test.rego` next to the policies and
are evaluated with the same engine the gateway serves with. For a failing test, the
engine's line coverage tells which statement of the test body was the last one reached:
that is the expression that failed, shown as `file:line: text`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regorus

from gateway.policy.builtins import dotted_name
from gateway.policy.errors import PolicyLoadError
from gateway.policy.loader import PolicySet, read_policy_dir
from gateway.policy.regorus_engine import build_engine, engine_message, reraise_interrupts


@dataclass(frozen=True, slots=True)
class TestResult:
    name: str  # data.<package>.<rule>
    file: str
    outcome: str  # pass | fail | error
    detail: str = ""
    failed_at: str = ""  # `file:line: expression`, where coverage can say
    prints: tuple[str, ...] = ()  # what the test's print() calls wrote

    @property
    def problem(self) -> str:
        """One line for a reload refusal: which test failed, and how."""
        where = f" at {self.failed_at}" if self.failed_at else ""
        return f"{self.file}: {self.name} {self.outcome}ed: {self.detail}{where}"


@dataclass(frozen=True, slots=True)
class _Test:
    name: str
    file: str
    source: str
    statements: tuple[tuple[int, int, int], ...]  # (line, start, end) of each body statement


def find_tests(engine: Any, sources: dict[str, str]) -> list[_Test]:
    """The test rules; PolicyLoadError when one is defined twice, since the engine
    evaluates the definitions together: the test would pass when either one passes."""
    tests: dict[str, _Test] = {}
    first_lines: dict[str, str] = {}
    problems = []
    for module in json.loads(engine.get_ast_as_json()):
        package = dotted_name(module["ast"]["package"]["refr"])
        file = module["source"]["file"]
        for rule in module["ast"]["rules"]:
            spec = rule.get("Spec", {})
            head = spec.get("head", {})
            for kind in ("Compr", "Set"):
                name = dotted_name(head.get(kind, {}).get("refr"))
                if not name or not name.startswith("test_"):
                    continue
                statements = tuple(
                    (stmt["span"]["line"], stmt["span"]["start"], stmt["span"]["end"])
                    for body in spec.get("bodies", [])
                    for stmt in body.get("query", {}).get("stmts", [])
                )
                full = f"data.{package}.{name}"
                where = f"{file}:{spec.get('span', {}).get('line', '?')}"
                if full in tests:
                    problems.append(
                        f"{where}: {full} is defined again (first at {first_lines[full]}): "
                        "give each test its own name, or it passes when either one passes"
                    )
                    continue
                tests[full] = _Test(full, file, sources.get(file, ""), statements)
                first_lines[full] = where
    if problems:
        raise PolicyLoadError(problems)
    return list(tests.values())


def named_tests(policy_set: PolicySet) -> list[tuple[str, str]]:
    """(data.<package>.<test rule>, file) of the set's tests, found by parsing them (OPA
    evaluates them; a parse here needs no builtins)."""
    parser = regorus.Engine()
    try:
        for rel, text in policy_set.tests:
            try:
                parser.add_policy(rel, text)
            except BaseException as exc:
                reraise_interrupts(exc)
                raise PolicyLoadError([engine_message(exc)]) from None
        return [(test.name, test.file) for test in find_tests(parser, dict(policy_set.tests))]
    finally:
        parser = None  # freed on this thread (see regorus_engine.build_engine)


def _failed_at(test: _Test, coverage: dict[str, Any]) -> str:
    covered: set[int] = set()
    for entry in coverage.get("files", []):
        if entry.get("path") == test.file:
            covered = set(entry.get("covered", []))
    reached = [stmt for stmt in test.statements if stmt[0] in covered]
    if not reached:
        return ""
    line, start, end = reached[-1]
    text = " ".join(test.source.encode()[start:end].decode(errors="replace").split())
    return f"{test.file}:{line}: {text}"


def run_tests(policy_set: PolicySet) -> list[TestResult]:
    """Evaluate every test rule; PolicyLoadError when the set (or a test) does not compile.

    The engine is made, used and freed inside this call, so it may run on a worker thread.
    """
    engine = build_engine(policy_set.modules + policy_set.tests, policy_set.data)
    try:
        engine.set_input({})
        engine.set_enable_coverage(True)
        engine.set_gather_prints(True)
        results = []
        for test in find_tests(engine, dict(policy_set.modules + policy_set.tests)):
            engine.clear_coverage_data()
            try:
                value = engine.eval_rule(test.name)
            except BaseException as exc:
                reraise_interrupts(exc)
                results.append(TestResult(test.name, test.file, "error", engine_message(exc)))
                continue
            prints = tuple(engine.take_prints())
            if value is True:
                results.append(TestResult(test.name, test.file, "pass", prints=prints))
                continue
            shown = "undefined" if value is None else json.dumps(value)
            coverage = json.loads(engine.get_coverage_report_as_json())
            results.append(
                TestResult(
                    test.name,
                    test.file,
                    "fail",
                    f"evaluated to {shown}",
                    failed_at=_failed_at(test, coverage),
                    prints=prints,
                )
            )
        return results
    finally:
        engine = None  # freed on this thread, even when an exception carries the frame


def run_rego_tests(path: Path) -> list[TestResult]:
    return run_tests(read_policy_dir(path))
