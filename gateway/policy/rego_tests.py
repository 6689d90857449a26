"""Run the Rego unit tests of a policy folder: every `test_*` rule must evaluate to true.

This is the workflow of `opa test`: tests live in `*_test.rego` next to the policies and
are evaluated with the same engine the gateway serves with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gateway.policy.builtins import dotted_name
from gateway.policy.embedded import build_engine, engine_message, reraise_interrupts
from gateway.policy.loader import read_policy_dir


@dataclass(frozen=True, slots=True)
class TestResult:
    name: str  # data.<package>.<rule>
    file: str
    outcome: str  # pass | fail | error
    detail: str = ""


def run_rego_tests(path: Path) -> list[TestResult]:
    policy_set = read_policy_dir(path)
    engine = build_engine(policy_set.modules + policy_set.tests, policy_set.data)
    tests: dict[str, str] = {}
    for module in json.loads(engine.get_ast_as_json()):
        package = dotted_name(module["ast"]["package"]["refr"])
        for rule in module["ast"]["rules"]:
            head = rule.get("Spec", {}).get("head", {})
            for kind in ("Compr", "Set", "Func"):
                name = dotted_name(head.get(kind, {}).get("refr"))
                if kind != "Func" and name and name.startswith("test_"):
                    tests.setdefault(f"data.{package}.{name}", module["source"]["file"])
    engine.set_input({})
    results = []
    for name, file in tests.items():
        try:
            value = engine.eval_rule(name)
        except BaseException as exc:
            reraise_interrupts(exc)
            results.append(TestResult(name, file, "error", engine_message(exc)))
            continue
        if value is True:
            results.append(TestResult(name, file, "pass"))
        else:
            shown = "undefined" if value is None else json.dumps(value)
            results.append(TestResult(name, file, "fail", f"evaluated to {shown}"))
    return results
