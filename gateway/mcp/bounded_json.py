"""JSON read from an MCP server, within `protection.max_json_depth`.

Python's JSON parser and encoder recurse: a document nested deep enough raises
RecursionError, which would crash the call. Text nested deeper than the limit is refused
before it is parsed (`TooDeep`, a ValueError like any other unreadable JSON), and so is
any that still exhausts the interpreter's recursion under a limit set close to it.
"""

from __future__ import annotations

import json
from typing import Any

from gateway import json_bounds


class TooDeep(ValueError):
    """JSON nested deeper than the gateway reads."""


def loads(text: bytes | str, limit: int) -> Any:
    raw = text.encode() if isinstance(text, str) else text
    if json_bounds.too_deep(raw, limit):
        raise TooDeep
    try:
        return json.loads(raw)
    except RecursionError:
        raise TooDeep from None


def dumps(value: Any) -> str:
    """`value` (parsed by `loads`, perhaps rewritten) as JSON text."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except RecursionError:
        raise TooDeep from None
