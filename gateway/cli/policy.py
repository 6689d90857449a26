"""`callgate policy test | eval | explain | replay`: policies tested and tried like code."""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, NoReturn

import click

from gateway.config import Config, ConfigError, load_config
from gateway.policy.decision import Decision
from gateway.policy.errors import PolicyError, PolicyLoadError
from gateway.policy.loader import PolicySet, read_policy_dir

_DIR = click.Path(file_okay=False, path_type=Path)
_FILE = click.Path(dir_okay=False, path_type=Path)
EXAMPLES_PER_CHANGE = 3


def _refuse(problems: list[str]) -> NoReturn:
    for problem in problems:
        click.echo(f"policy: {problem}", err=True)
    sys.exit(2)


def _config(config_path: Path) -> Config:
    try:
        return load_config(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"{config_path}: {problem}", err=True)
        sys.exit(2)


def _source(
    policies: Path | None, config_path: Path | None, decision: str | None
) -> tuple[Path, str]:
    """The policy folder and decision rule, from --policies or the config's `policy`."""
    if policies is not None and config_path is not None:
        raise click.UsageError("give --policies or --config, not both")
    rule_path = decision
    if config_path is not None:
        config = _config(config_path)
        policies = config.policy.path
        rule_path = rule_path or config.policy.decision
    return policies or Path("policies"), "data." + (rule_path or "gateway/decision").replace(
        "/", "."
    )


def _read(path: Path) -> PolicySet:
    try:
        return read_policy_dir(path)
    except PolicyLoadError as exc:
        _refuse(exc.problems)


def _load_engine(path: Path, rule: str) -> Any:
    from gateway.policy.embedded import EmbeddedEngine

    engine = EmbeddedEngine(rule)
    try:
        engine.load(path)
    except PolicyLoadError as exc:
        _refuse(exc.problems)
    return engine


def _read_input(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise click.BadParameter(
            f"cannot read a JSON document: {exc}", param_hint="--input"
        ) from None
    if isinstance(document, dict) and isinstance(document.get("input"), dict):
        document = document["input"]  # a line of `audit export --format policy-input`
    if not isinstance(document, dict):
        raise click.BadParameter("the input must be a JSON object", param_hint="--input")
    return document


def _with_operation(
    input_doc: dict[str, Any], config_path: Path | None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The input with `operation` resolved by the config's document for its tool, as the
    gateway resolves it (docs/typed-tools.md), when it has none yet; and, if it was
    resolved here, what to show of it: the operation and the problems `validate` finds."""
    if config_path is None or "operation" in input_doc:
        return input_doc, None
    tool_name = (input_doc.get("tool") or {}).get("name")
    tool = next((t for t in _config(config_path).tools if t.name == tool_name), None)
    if tool is None or tool.openapi is None:
        return {**input_doc, "operation": None}, None
    import asyncio

    from gateway.openapi.document import SpecError
    from gateway.openapi.specs import compile_spec

    try:
        spec = asyncio.run(compile_spec(tool))
    except SpecError as exc:
        for problem in exc.problems:
            click.echo(f"{config_path}: {problem}", err=True)
        sys.exit(2)
    request = input_doc.get("request") or {}
    body = request.get("body")
    resolved = spec.resolve(
        str(request.get("method", "")),
        str(request.get("path", "/")),
        request.get("query") or {},
        request.get("headers") or {},
        body,
        bool(request.get("size", 0)) or body is not None,
    )
    operation = resolved.policy_input()
    shown = {
        "tool": tool.name,
        "operation": operation,
        "schema_problems": [p.as_json() for p in resolved.problems],
    }
    return {**input_doc, "operation": operation}, shown


def _set_as_list(value: Any) -> Any:
    """Rego sets arrive as Python sets: shown as sorted arrays, as `opa eval` shows them."""
    if isinstance(value, set | frozenset):
        return sorted(value, key=lambda item: json.dumps(item, sort_keys=True, default=str))
    raise TypeError(f"{type(value).__name__} is not JSON")


def _dumps(value: Any, **options: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=_set_as_list, **options)


def decision_json(decision: Decision) -> dict[str, Any]:
    approval = decision.approval
    return {
        "allow": decision.allow,
        "reason": decision.reason,
        "approval_required": decision.approval_required,
        "approval": None
        if approval is None
        else {
            "roles": list(approval.roles),
            "min_approvals": approval.min_approvals,
            "ttl_s": approval.ttl_s,
            "summary": approval.summary,
            "fields": list(approval.fields),
        },
        "rate_limits": [
            {"key": r.key, "limit": r.limit, "window_s": r.window_s} for r in decision.rate_limits
        ],
        "redact": list(decision.redact),
        "tags": decision.tags,
        "policy_version": decision.policy_version,
    }


def _source_options(func: Any) -> Any:
    func = click.option(
        "--decision",
        help="decision rule path, e.g. examples/money/decision "
        "(default: the config's, or gateway/decision)",
    )(func)
    func = click.option(
        "--config",
        "config_path",
        type=_FILE,
        help="take the policy folder and rule from callgate.yaml",
    )(func)
    return click.option("--policies", type=_DIR, help="policy folder (default: ./policies)")(func)


@click.group()
def policy() -> None:
    """Work with Rego policies: test, evaluate, explain, replay."""


@policy.command("test")
@click.argument("path", type=_DIR, default="policies")
@click.option("-v", "--verbose", is_flag=True, help="also show what passing tests print()")
def test_command(path: Path, verbose: bool) -> None:
    """Run the Rego unit tests (test_* rules in *_test.rego) of a policy folder; exit 1 when
    any fails, 2 when the folder does not compile."""
    from gateway.policy.rego_tests import run_tests

    try:
        results = run_tests(_read(path))
    except PolicyLoadError as exc:
        _refuse(exc.problems)
    for result in results:
        line = f"{result.outcome.upper():5} {result.name} ({result.file})"
        click.echo(line + (f": {result.detail}" if result.detail else ""))
        if result.failed_at:
            click.echo(f"      failed at {result.failed_at}")
        if result.outcome != "pass" or verbose:
            for printed in result.prints:
                click.echo(f"      print: {printed}")
    failed = sum(r.outcome != "pass" for r in results)
    click.echo(f"{len(results) - failed} passed, {failed} failed")
    if not results:
        click.echo(f"no test_* rules in {path}/**/*_test.rego", err=True)
    sys.exit(1 if failed or not results else 0)


@policy.command("eval")
@click.option("--input", "input_path", type=_FILE, required=True, help="the input document (JSON)")
@_source_options
def eval_command(
    input_path: Path, policies: Path | None, config_path: Path | None, decision: str | None
) -> None:
    """Print the decision for one input document (docs/policies.md, "Input"); with
    --config, a typed tool's call is first resolved to its operation."""
    folder, rule = _source(policies, config_path, decision)
    input_doc, resolved = _with_operation(_read_input(input_path), config_path)
    engine = _load_engine(folder, rule)
    try:
        result = engine.decide(input_doc)
    except PolicyError as exc:
        click.echo(f"policy: the engine failed: {exc}", err=True)
        sys.exit(1)
    shown = decision_json(result)
    if resolved is not None:
        shown["resolved"] = resolved
    click.echo(_dumps(shown, indent=2))


@policy.command("explain")
@click.option("--input", "input_path", type=_FILE, required=True, help="the input document (JSON)")
@click.option("--lines", is_flag=True, help="also list every policy line the decision reached")
@_source_options
def explain_command(
    input_path: Path,
    lines: bool,
    policies: Path | None,
    config_path: Path | None,
    decision: str | None,
) -> None:
    """Show the decision and the value of every rule of its package for one input: which
    rules contributed the deny or approval reason. With --config, a typed tool's call is
    first resolved to its operation."""
    from gateway.policy.explain import explain

    folder, rule = _source(policies, config_path, decision)
    input_doc, resolved = _with_operation(_read_input(input_path), config_path)
    if resolved is not None:
        click.echo(f"operation ({resolved['tool']}'s OpenAPI document):")
        click.echo(_dumps(resolved["operation"], indent=2))
        for problem in resolved["schema_problems"]:
            click.echo(f"  schema problem: {problem['pointer']}: {problem['message']}")
        click.echo("")
    _load_engine(folder, rule)  # the same checks as serving (unknown builtins, the rule exists)
    try:
        explanation = explain(_read(folder), rule, input_doc)
    except PolicyError as exc:
        click.echo(f"policy: the engine failed: {exc}", err=True)
        sys.exit(1)
    click.echo(f"decision ({rule}):")
    click.echo(_dumps(decision_json(explanation.decision), indent=2))
    click.echo("\nrules of the package for this input:")
    for value in explanation.rules:
        if value.error:
            shown = f"error: {value.error}"
        elif not value.defined:
            shown = "undefined"
        else:
            shown = _dumps(value.value, sort_keys=True)
            shown = shown if len(shown) <= 200 else shown[:197] + "..."
        click.echo(f"  {value.name} = {shown}  ({value.where})")
    if lines:
        click.echo("\nlines reached:")
        for reached in explanation.reached:
            click.echo(f"  {reached}")


@policy.command("replay")
@click.option(
    "--audit",
    "export_path",
    type=_FILE,
    required=True,
    help="`audit export --format policy-input` output",
)
@click.option("--fail-on-change", is_flag=True, help="exit 1 when any decision would change")
@_source_options
def replay_command(
    export_path: Path,
    fail_on_change: bool,
    policies: Path | None,
    config_path: Path | None,
    decision: str | None,
) -> None:
    """Decide recorded calls again with a policy set; print how many outcomes (allow,
    approval, deny) would change, grouped by tool, with examples."""
    folder, rule = _source(policies, config_path, decision)
    engine = _load_engine(folder, rule)
    try:
        text = export_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise click.BadParameter(str(exc), param_hint="--audit") from None
    total = without_body = errors = 0
    changes: Counter[tuple[str, str, str]] = Counter()
    examples: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            input_doc, recorded = entry["input"], entry["recorded"]
            tool = input_doc["tool"]["name"]
            before = recorded["outcome"]
        except (ValueError, KeyError, TypeError):
            raise click.BadParameter(
                f"line {number} is not a policy-input line (make the file with "
                "`callgate audit export --format policy-input`)",
                param_hint="--audit",
            ) from None
        total += 1
        without_body += not recorded.get("body_recorded", False)
        try:
            result = engine.decide(input_doc)
            after = result.outcome
        except PolicyError as exc:
            errors += 1
            after, result = "error", None
            reason = str(exc)
        else:
            reason = result.reason
        if after == before:
            continue
        key = (tool, before, after)
        changes[key] += 1
        if len(examples[key]) < EXAMPLES_PER_CHANGE:
            request = input_doc.get("request", {})
            examples[key].append(
                f"{request.get('method')} {request.get('path')} "
                f"(request {input_doc.get('context', {}).get('request_id')}): {reason}"
            )
    changed = sum(changes.values())
    click.echo(
        f"replayed {total} decisions against {folder} (version {engine.policy_version[:12]}): "
        f"{changed} would change, {total - changed} unchanged"
    )
    for (tool, before, after), count in sorted(changes.items()):
        click.echo(f"  {tool}: {before} -> {after}: {count}")
        for example in examples[(tool, before, after)]:
            click.echo(f"      e.g. {example}")
    if errors:
        click.echo(f"{errors} inputs made the engine fail (counted as -> error)")
    if without_body:
        click.echo(
            f"{without_body} inputs have no recorded body (audit.record_bodies was off): "
            "rules that read request.body saw null"
        )
    sys.exit(1 if fail_on_change and changed else 0)
