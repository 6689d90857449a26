"""JSON the gateway parses, within bounds: one module for every reader (request bodies,
JSON-RPC, tool lists, stream events, stored answers).

- Nesting deeper than the caller's limit (`protection.max_json_depth`, at most 512) is
  `TooDeep`: Python's parser and encoder recurse (a RecursionError near 950 levels), and
  so do the policy engine and most tools. The parsed value is measured only when its text
  has more brackets than the limit, so ordinary documents cost nothing extra.
- `strict_numbers` are parse hooks that refuse what the policy engine cannot hold as the
  tool reads it (`OutOfRange`): an integer past i64 (regorus clamps it), a number of
  magnitude 2**63 or more (regorus refuses it), a float that overflows to infinity, or a
  non-zero literal that underflows to zero. `out_of_range_pointer` names the field for
  the refusal, on the slow path only.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Callable
from typing import Any

I64_MIN, I64_MAX = -(2**63), 2**63 - 1
_FLOAT_LIMIT = 2.0**63


class TooDeep(ValueError):
    """JSON nested deeper than the gateway reads."""


class OutOfRange(ValueError):
    """A number the policy engine cannot hold as the tool reads it."""


def loads(text: str | bytes, limit: int, **hooks: Any) -> Any:
    """`json.loads(text, **hooks)`, refusing nesting deeper than `limit` with TooDeep."""
    try:
        value = json.loads(text, **hooks)
    except RecursionError:
        raise TooDeep from None
    brackets = text.count("[") + text.count("{") if isinstance(text, str) else _count(text)
    if brackets > limit and _deeper_than(value, limit):
        raise TooDeep
    return value


def dumps(value: Any) -> str:
    """`value` (read by `loads`, perhaps rewritten) as JSON text."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except RecursionError:
        raise TooDeep from None


def _count(text: bytes) -> int:
    return text.count(b"[") + text.count(b"{")


def _deeper_than(value: Any, limit: int) -> bool:
    level: list[Any] = [value]
    for _ in range(limit):
        level = [
            item
            for node in level
            if isinstance(node, dict | list)
            for item in (node.values() if isinstance(node, dict) else node)
        ]
        if not level:
            return False
    return any(isinstance(node, dict | list) for node in level)


def _int(literal: str) -> int:
    value = int(literal)
    if not I64_MIN <= value <= I64_MAX:
        raise OutOfRange(literal)
    return value


def _float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value) or abs(value) >= _FLOAT_LIMIT or (value == 0.0 and _nonzero(literal)):
        raise OutOfRange(literal)
    return value


def _nonzero(literal: str) -> bool:
    return any(c in "123456789" for c in literal.lower().partition("e")[0])


strict_numbers: dict[str, Callable[[str], Any]] = {"parse_int": _int, "parse_float": _float}


class _Marked(float):
    """An out-of-range literal, kept to be found by out_of_range_pointer."""


def _mark(literal: str) -> Any:
    try:
        return _int(literal) if literal.lstrip("-").isdigit() else _float(literal)
    except OutOfRange:
        return _Marked(0.0)


def out_of_range_pointer(text: str) -> str | None:
    """The JSON pointer of the first out-of-range number in `text`, which strict_numbers
    refused (slow: the text is parsed again); None when `text` is not JSON after all (the
    number came before the syntax error)."""
    try:
        value = json.loads(text, parse_int=_mark, parse_float=_mark)
    except (ValueError, RecursionError):
        return None
    queue = deque([("", value)])
    while queue:
        pointer, item = queue.popleft()
        if isinstance(item, _Marked):
            return pointer or "/"
        if isinstance(item, dict):
            queue.extend((f"{pointer}/{_escaped(key)}", sub) for key, sub in item.items())
        elif isinstance(item, list):
            queue.extend((f"{pointer}/{i}", sub) for i, sub in enumerate(item))
    return "/"


def _escaped(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")
