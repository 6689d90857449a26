"""gateway/json_bounds.py: nesting and number bounds of every JSON the gateway parses."""

from __future__ import annotations

import pytest

from gateway import json_bounds


@pytest.mark.parametrize(
    ("text", "limit", "too_deep"),
    [
        ("[" * 64 + "]" * 64, 64, False),
        ("[" * 65 + "]" * 65, 64, True),
        ('{"a": ' * 65 + "1" + "}" * 65, 64, True),
        ('["[[[[[[", {"a": ["]]]"]}]', 3, False),  # brackets in strings are not nesting
        ("[" * 20_000 + "]" * 20_000, 64, True),  # past Python's own recursion limit
        ("[" + "[]," * 500 + "[]]", 2, False),  # many brackets, shallow
    ],
    ids=["at-limit", "past-limit", "objects", "strings", "recursion", "wide"],
)
def test_nesting_is_bounded(text: str, limit: int, too_deep: bool) -> None:
    if too_deep:
        with pytest.raises(json_bounds.TooDeep):
            json_bounds.loads(text, limit)
        with pytest.raises(json_bounds.TooDeep):
            json_bounds.loads(text.encode(), limit)
    else:
        assert json_bounds.loads(text, limit) is not None


@pytest.mark.parametrize(
    ("text", "pointer"),
    [
        ('{"a": 9223372036854775808}', "/a"),
        ('{"a": -9223372036854775809}', "/a"),
        ('{"a": [1, 1e400]}', "/a/1"),
        ('{"a/b": {"c~d": 1e-400}}', "/a~1b/c~0d"),
        ('{"a": 1.5e300}', "/a"),
        ("9223372036854775808", "/"),
    ],
)
def test_numbers_the_engine_cannot_hold_are_named(text: str, pointer: str) -> None:
    with pytest.raises(json_bounds.OutOfRange):
        json_bounds.loads(text, 64, **json_bounds.strict_numbers)
    assert json_bounds.out_of_range_pointer(text) == pointer


@pytest.mark.parametrize(
    "text", ['{"a": 9223372036854775807, "b": -9223372036854775808, "c": 1e18, "d": 0.0, "e": 0e5}']
)
def test_numbers_it_can_hold_pass(text: str) -> None:
    assert json_bounds.loads(text, 64, **json_bounds.strict_numbers)["a"] == 2**63 - 1


def test_a_number_before_a_syntax_error_names_no_field() -> None:
    assert json_bounds.out_of_range_pointer("[9223372036854775808, 1e+-16]") is None
