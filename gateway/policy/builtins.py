"""Load-time check that every function a policy calls exists in the engine.

regorus parses a module without resolving its calls; a call to a builtin it does not
implement (e.g. `io.jwt.decode`, `crypto.*`) would only fail when a request reaches it.
Its RVM compiler does report unknown functions, but it rejects valid Rego it cannot
compile yet (the `with` keyword), so instead this walks the parsed AST of every module,
resolves each call against the policies' own functions and imports, and asks the
interpreter itself whether each remaining name is a builtin it knows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import regorus

_MISSING = "could not find function"


def dotted_name(ref: Any) -> str | None:
    """`{"RefDot": {"refr": {"Var": "io"}, "field": [_, "jwt"]}}` -> "io.jwt"; else None."""
    if not isinstance(ref, dict):
        return None
    if "Var" in ref:
        return str(ref["Var"]["value"])
    if "RefDot" in ref:
        base = dotted_name(ref["RefDot"]["refr"])
        return None if base is None else f"{base}.{ref['RefDot']['field'][1]}"
    return None


def _calls(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Call":
                yield value
            yield from _calls(value)
    elif isinstance(node, list):
        for value in node:
            yield from _calls(value)


def _function_heads(rules: list[Any]) -> Iterator[str]:
    for rule in rules:
        head = rule.get("Spec", {}).get("head", {})
        if "Func" in head:
            name = dotted_name(head["Func"]["refr"])
            if name is not None:
                yield name


def _imports(module: dict[str, Any], source: bytes) -> dict[str, str]:
    """alias -> full reference, for `import data.x.y` and `import data.x.y as z`."""
    aliases = {}
    for imp in module["ast"]["imports"]:
        target = dotted_name(imp["refr"])
        if target is None or not target.startswith("data."):
            continue
        alias_span = imp.get("as")
        alias = (
            source[alias_span["start"] : alias_span["end"]].decode()
            if alias_span
            else target.rsplit(".", 1)[1]
        )
        aliases[alias] = target
    return aliases


@lru_cache(maxsize=1024)
def engine_knows(name: str, arity: int) -> bool:
    """Ask a throw-away interpreter to call `name`; only 'could not find' means unknown."""
    probe = regorus.Engine()
    probe.set_gather_prints(True)
    args = ", ".join(["null"] * arity)
    probe.add_policy("probe.rego", f"package callgate_probe\nx := {name}({args})\n")
    try:
        probe.eval_rule("data.callgate_probe.x")
    except Exception as exc:
        return _MISSING not in str(exc)
    return True


def unknown_functions(ast_json: str) -> list[str]:
    """`file:line: unknown function 'name'` for every call the engine cannot make."""
    modules = json.loads(ast_json)
    user_functions = set()
    for module in modules:
        package = dotted_name(module["ast"]["package"]["refr"])
        for head in _function_heads(module["ast"]["rules"]):
            user_functions.add(f"data.{package}.{head}")
    problems = []
    for module in modules:
        source = module["source"]["contents"].encode()
        package = dotted_name(module["ast"]["package"]["refr"])
        aliases = _imports(module, source)
        for call in _calls(module["ast"]["rules"]):
            name = dotted_name(call["fcn"])
            if name is None:
                continue
            first, _, rest = name.partition(".")
            if name.startswith("data."):
                full = name
            elif first in aliases:
                full = aliases[first] + ("." + rest if rest else "")
            else:
                full = f"data.{package}.{name}"
            if full in user_functions:
                continue
            local = not name.startswith("data.") and first not in aliases
            if local and engine_knows(name, len(call.get("params", []))):
                continue
            where = f"{module['source']['file']}:{call['span']['line']}"
            problems.append(f"{where}: unknown function '{name}' (not a builtin of this engine)")
    return problems
