"""An action in one line, for the approvers' queue, its page and webhook messages:
`support-bot → payments: POST /v1/refunds · amount 250 · currency EUR`, or the policy's
`approval.summary` after the arrow when it set one (docs/policies.md). Without the body
(`with_body` off: a webhook without include_body) it stops at the path."""

from __future__ import annotations

import json
from typing import Any

MAX_CHARS = 160
_MAX_VALUE_CHARS = 40


def headline(action: dict[str, Any], with_body: bool = True) -> str:
    what = action["decision"].get("summary") or _call(action["request"], with_body)
    return _cut(f"{action['agent']} → {action['tool']}: {what}", MAX_CHARS)


def _call(request: dict[str, Any], with_body: bool) -> str:
    parts = [f"{request['method']} {request['path']}"]
    body = request.get("body") if with_body else None
    if isinstance(body, dict):
        parts += [
            f"{key} {_scalar(value)}"
            for key, value in body.items()
            if not isinstance(value, dict | list)
        ]
    return " · ".join(parts)


def _scalar(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return _cut(text, _MAX_VALUE_CHARS)


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())  # one line, whatever newlines an agent sent
    return text if len(text) <= limit else text[: limit - 1] + "…"
