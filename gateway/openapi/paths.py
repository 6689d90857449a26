"""Path templates -> the path items they match, most specific first.

Built once per document as a trie over path segments. A segment of a template is a
literal (`refunds`), a whole parameter (`{id}`) or a pattern mixing both (`{name}.json`).
Matching walks the trie preferring, at each segment, the literal, then patterns, then a
whole parameter, backtracking when a branch ends without a match: so `/refunds/search`
beats `/refunds/{id}`, as OpenAPI requires (a concrete path before a templated one), and
of two templated paths the one with a literal segment earlier wins. A parameter never
matches an empty segment. Segments are matched percent-decoded: the route stage has
already refused encoded `/`, so the decoded path splits on `/` exactly as the raw one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

_PARAMETER = re.compile(r"\{([^{}/]+)\}")


@dataclass(slots=True)
class _Node(Generic[T]):
    literals: dict[str, _Node[T]] = field(default_factory=dict)
    # Segments mixing text and parameters, as patterns; their groups are the parameters.
    patterns: list[tuple[re.Pattern[str], _Node[T]]] = field(default_factory=list)
    # A segment that is one parameter (its name is the template's, see `_named`).
    parameter: _Node[T] | None = None
    value: tuple[str, T] | None = None  # (template, what it names) ending here


class PathTable(Generic[T]):
    """Templates -> values; `matches(path)` yields (template, value, parameters) for every
    template matching `path`, most specific first."""

    def __init__(self) -> None:
        self._root: _Node[T] = _Node()

    def add(self, template: str, value: T) -> None:
        node = self._root
        for segment in template.split("/")[1:]:
            if not _PARAMETER.search(segment):
                node = node.literals.setdefault(segment, _Node())
            elif _PARAMETER.fullmatch(segment):
                # Templates naming this segment differently share the branch; each names
                # its values at its end.
                node.parameter = node.parameter or _Node()
                node = node.parameter
            else:
                regex = "".join(
                    f"(?P<p{i}>.+?)" if i % 2 else re.escape(part)
                    for i, part in enumerate(_PARAMETER.split(segment))
                )
                for pattern, child in node.patterns:
                    if pattern.pattern == regex:
                        node = child
                        break
                else:
                    child = _Node()
                    node.patterns.append((re.compile(regex), child))
                    node = child
        node.value = (template, value)

    def matches(self, path: str) -> Iterator[tuple[str, T, dict[str, str]]]:
        """Every template matching `path` (decoded), most specific first, with its path
        parameters; then, if none matched, the same for `path` with its trailing slash
        removed (or added)."""
        segments = path.split("/")[1:]
        found = False
        for template, value, values in self._walk(self._root, segments, 0, []):
            found = True
            yield template, value, _named(template, values)
        if found:
            return
        other = segments[:-1] if segments and segments[-1] == "" and len(segments) > 1 else None
        if other is None:
            other = [*segments, ""]
        for template, value, values in self._walk(self._root, other, 0, []):
            yield template, value, _named(template, values)

    def _walk(
        self, node: _Node[T], segments: list[str], at: int, values: list[str]
    ) -> Iterator[tuple[str, T, list[str]]]:
        if at == len(segments):
            if node.value is not None:
                yield node.value[0], node.value[1], values
            return
        segment = segments[at]
        child = node.literals.get(segment)
        if child is not None:
            yield from self._walk(child, segments, at + 1, values)
        for pattern, pattern_child in node.patterns:
            hit = pattern.fullmatch(segment)
            if hit is not None:
                yield from self._walk(pattern_child, segments, at + 1, [*values, *hit.groups()])
        if node.parameter is not None and segment:
            yield from self._walk(node.parameter, segments, at + 1, [*values, segment])


def _named(template: str, values: list[str]) -> dict[str, str]:
    """The template's parameter names, in order, with the values matched for them."""
    return dict(zip(_PARAMETER.findall(template), values, strict=False))
