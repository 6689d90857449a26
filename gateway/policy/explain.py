"""Why a policy decided what it did: the value of every rule of the decision's package for
one input, and the lines the evaluation reached (`callgate policy explain`).

A deny or approval reason is usually assembled from helper rules (`deny_reason`,
`needs_approval`, `granting_roles`...): seeing each one's value for the input, with where
it is defined, shows which of them contributed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gateway.policy.builtins import dotted_name
from gateway.policy.decision import Decision, parse_decision
from gateway.policy.errors import PolicyError
from gateway.policy.loader import PolicySet
from gateway.policy.regorus_engine import build_engine, engine_message, reraise_interrupts


@dataclass(frozen=True, slots=True)
class RuleValue:
    name: str  # data.<package>.<rule>
    where: str  # file:line of its first definition
    value: Any
    defined: bool
    error: str = ""


@dataclass(frozen=True, slots=True)
class Explanation:
    decision: Decision
    rules: tuple[RuleValue, ...]
    reached: tuple[str, ...]  # `file:line: text` of each line the decision evaluated


def _package_rules(ast: list[dict[str, Any]], package: str) -> dict[str, str]:
    """Rule name -> `file:line` of its first definition, functions left out (they need
    arguments), for the modules of one package."""
    rules: dict[str, str] = {}
    for module in ast:
        if dotted_name(module["ast"]["package"]["refr"]) != package:
            continue
        for rule in module["ast"]["rules"]:
            spec = rule.get("Spec", {})
            head = spec.get("head", {})
            for kind in ("Compr", "Set"):
                name = dotted_name(head.get(kind, {}).get("refr"))
                if name is not None:
                    rules.setdefault(name, f"{module['source']['file']}:{spec['span']['line']}")
            if "Default" in rule:
                name = dotted_name(rule["Default"].get("refr"))
                if name is not None:
                    rules.setdefault(
                        name, f"{module['source']['file']}:{rule['Default']['span']['line']}"
                    )
    return rules


def _reached(coverage: dict[str, Any], sources: dict[str, str]) -> tuple[str, ...]:
    lines = []
    for entry in coverage.get("files", []):
        text = sources.get(entry["path"], "").splitlines()
        for number in sorted(entry.get("covered", [])):
            shown = text[number - 1].strip() if 0 < number <= len(text) else ""
            lines.append(f"{entry['path']}:{number}: {shown}")
    return tuple(lines)


def explain(policy_set: PolicySet, rule: str, input_doc: dict[str, Any]) -> Explanation:
    """Evaluate `rule` (e.g. data.gateway.decision) for the input and every sibling rule."""
    package, _, _name = rule.removeprefix("data.").rpartition(".")
    engine = build_engine(policy_set.modules, policy_set.data)
    try:
        engine.set_input(input_doc)
        engine.set_enable_coverage(True)
        try:
            raw = engine.eval_rule(rule)
        except BaseException as exc:
            reraise_interrupts(exc)
            raise PolicyError(engine_message(exc)) from None
        coverage = json.loads(engine.get_coverage_report_as_json())
        values = []
        for name, where in _package_rules(json.loads(engine.get_ast_as_json()), package).items():
            full = f"data.{package}.{name}"
            try:
                value = engine.eval_rule(full)
            except BaseException as exc:
                reraise_interrupts(exc)
                values.append(RuleValue(full, where, None, False, engine_message(exc)))
                continue
            values.append(RuleValue(full, where, value, value is not None))
        return Explanation(
            decision=parse_decision(raw, policy_set.policy_version),
            rules=tuple(values),
            reached=_reached(coverage, dict(policy_set.modules)),
        )
    finally:
        engine = None  # freed on this thread (see regorus_engine.build_engine)
