"""Bounds on JSON the gateway parses, checked before or after `json.loads`.

A JSON text nested deeper than the bound is refused before it is parsed (Python's parser
recurses, and so do the policy engine and most tools); numbers the policy engine cannot
hold as the tool reads them are found after it, so that the caller can name the field:
an integer past i64 (regorus clamps it), a number of magnitude 2**63 or more (regorus
refuses it), a float that overflows to infinity or a non-zero literal that underflows to
zero.
"""

from __future__ import annotations

import math
import re
from typing import Any

# A JSON string (skipped whole) or one bracket.
_STRUCTURE = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')
# Literals that may be out of range: long digit runs or exponents of two digits or more.
_SUSPECT_NUMBER = re.compile(rb"\d{19}|[eE][+-]?0*[1-9]\d")
I64_MIN, I64_MAX = -(2**63), 2**63 - 1


def too_deep(text: bytes, limit: int) -> bool:
    """True when `text` opens more than `limit` arrays or objects inside each other."""
    if text.count(b"[") + text.count(b"{") <= limit:  # the common case: never that deep
        return False
    depth = 0
    for match in _STRUCTURE.finditer(text):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif token in (b"]", b"}"):
            depth -= 1
    return False


def out_of_range(text: bytes, value: Any) -> str | None:
    """The JSON pointer of the first number in `value` (parsed from `text`) that a 64-bit
    parser cannot hold, or None."""
    if not _SUSPECT_NUMBER.search(text):
        return None
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        pointer, item = stack.pop()
        if isinstance(item, dict):
            stack.extend((f"{pointer}/{_escaped(key)}", sub) for key, sub in item.items())
        elif isinstance(item, list):
            stack.extend((f"{pointer}/{i}", sub) for i, sub in enumerate(item))
        elif _unholdable(item):
            return pointer or "/"
    return None


def _unholdable(item: Any) -> bool:
    if isinstance(item, bool):
        return False
    if isinstance(item, int):
        return not I64_MIN <= item <= I64_MAX
    return isinstance(item, float) and (
        math.isinf(item) or abs(item) >= 2.0**63 or item is _UNDERFLOW
    )


class _Underflow(float):
    """A non-zero literal that rounds to 0.0: a different number to a decimal parser."""


_UNDERFLOW = _Underflow(0.0)


def parse_float(literal: str) -> float:
    """For `json.loads(parse_float=…)`: marks literals that underflow, for out_of_range."""
    value = float(literal)
    if value == 0.0 and any(c in "123456789" for c in literal.lower().partition("e")[0]):
        return _UNDERFLOW
    return value


def _escaped(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")
