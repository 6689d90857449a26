"""A claim by its dotted path: `roles`, `scope`, `kubernetes.io.serviceaccount.name`.

Claim names may hold dots themselves (Kubernetes' `kubernetes.io`), so at each level the
longest name present wins: `kubernetes.io.namespace` is `claims["kubernetes.io"]["namespace"]`.
"""

from __future__ import annotations

from typing import Any

MISSING = object()


def find(claims: Any, path: str) -> Any:
    """The value at `path` in `claims`, or MISSING."""
    return _find(claims, path.split("."))


def _find(value: Any, parts: list[str]) -> Any:
    if not parts:
        return value
    if not isinstance(value, dict):
        return MISSING
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in value:
            found = _find(value[name], parts[end:])
            if found is not MISSING:
                return found
    return MISSING


def roles(value: Any) -> tuple[str, ...] | None:
    """The roles a claim holds: a list of strings, or one string of space-separated ones
    (as OAuth2's `scope`); None for any other type. A missing claim holds no roles."""
    if value is MISSING:
        return ()
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list) and all(isinstance(role, str) for role in value):
        return tuple(value)
    return None


def holds(value: Any, required: str | int | bool) -> bool:
    """The claim equals `required`, or is a list that contains it."""
    if isinstance(value, list):
        return any(_same(item, required) for item in value)
    return _same(value, required)


def _same(value: Any, required: str | int | bool) -> bool:
    # True == 1 in Python; a claim of 1 must not satisfy `true`, nor "1" satisfy 1.
    return type(value) is type(required) and value == required
