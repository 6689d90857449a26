"""Parameter values as the agent sent them (text) -> typed per their schema.

Only what is needed to read them as OpenAPI's default styles write them: `form` for the
query (an array repeats the parameter, or with `explode: false` joins its items with `,`),
`simple` for path and header (items joined with `,`). Integers, numbers and booleans are
converted; a value that does not read as its type is kept as text, so that the validator
names it. Objects are kept as text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_INTEGER = re.compile(r"[-+]?[0-9]+")
_NUMBER = re.compile(r"[-+]?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_BOOLEANS = {"true": True, "false": False}
# Longer digit strings stay text: Python refuses to convert past 4,300 digits, and no
# schema's integer is that long.
MAX_DIGITS = 64


def _integer(text: str) -> Any:
    return int(text) if len(text) <= MAX_DIGITS and _INTEGER.fullmatch(text) else text


def _number(text: str) -> Any:
    if len(text) > MAX_DIGITS:
        return text
    if _INTEGER.fullmatch(text):
        return int(text)
    if not _NUMBER.fullmatch(text):
        return text
    value = float(text)
    return value if math.isfinite(value) else text  # 1e999 is no JSON number


def _boolean(text: str) -> Any:
    return _BOOLEANS.get(text, text)


def _text(text: str) -> Any:
    return text


_SCALARS: dict[str, Callable[[str], Any]] = {
    "integer": _integer,
    "number": _number,
    "boolean": _boolean,
}


@dataclass(frozen=True, slots=True)
class Reader:
    """How one parameter's text becomes its value."""

    scalar: Callable[[str], Any]
    array: bool
    explode: bool
    location: str  # path | query | header

    def read(self, texts: list[str]) -> Any:
        """The value of the parameter sent as `texts` (a query parameter may repeat)."""
        if not self.array:
            return self.scalar(texts[0]) if len(texts) == 1 else [self.scalar(t) for t in texts]
        if self.location == "query" and self.explode:
            return [self.scalar(text) for text in texts]
        return [self.scalar(item) for text in texts for item in text.split(",")]


def schema_type(schema: Any, resolve: Callable[[Any], Any]) -> str | None:
    """The JSON type a parameter's schema asks for (the first non-null one), looking
    through `$ref`, `allOf`, `anyOf` and `oneOf`; None when it names none."""
    schema = resolve(schema)
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if isinstance(kind, str):
        return kind
    for combined in ("allOf", "anyOf", "oneOf"):
        for part in schema.get(combined, []):
            found = schema_type(part, resolve)
            if found is not None:
                return found
    return None


def reader_for(parameter: dict[str, Any], resolve: Callable[[Any], Any]) -> Reader:
    location = parameter["in"]
    schema = parameter.get("schema", {})
    kind = schema_type(schema, resolve)
    array = kind == "array"
    if array:
        items = resolve(schema).get("items", {})
        scalar = _SCALARS.get(schema_type(items, resolve) or "", _text)
    else:
        scalar = _SCALARS.get(kind or "", _text)
    style = parameter.get("style", "form" if location == "query" else "simple")
    explode = parameter.get("explode", style == "form")
    return Reader(scalar, array, bool(explode), location)
