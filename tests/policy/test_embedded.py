"""The embedded regorus engine: load-time checks, fail-closed evaluation, value fidelity."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from gateway.policy.embedded import EmbeddedEngine
from gateway.policy.errors import PolicyError, PolicyLoadError

HEADER = "package gateway\n\nimport rego.v1\n\n"


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def load(tmp_path: Path, files: dict[str, str]) -> EmbeddedEngine:
    engine = EmbeddedEngine()
    engine.load(write(tmp_path / "p", files))
    return engine


# --- load-time checks --------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "line", "name"),
    [
        ('decision := {"allow": true} if io.jwt.decode(input.t)\n', 5, "io.jwt.decode"),
        ('decision := {"allow": crypto.sha256("x") == ""}\n', 5, "crypto.sha256"),
        (
            'x := 1\n\ndecision := {"allow": true} if {\n\tnet.cidr_merge([])\n}\n',
            8,
            "net.cidr_merge",
        ),
        # unreachable from the decision rule, still refused: it would fail whenever used
        ('decision := {"allow": true}\n\nf(x) := graphql.parse(x, "")\n', 7, "graphql.parse"),
    ],
    ids=["jwt-in-body", "crypto-in-head", "cidr-merge-deeper", "unused-function"],
)
def test_builtin_the_engine_lacks_is_refused_with_file_line_and_name(tmp_path, body, line, name):
    with pytest.raises(PolicyLoadError) as caught:
        load(tmp_path, {"gateway.rego": HEADER + body})
    assert caught.value.problems == [
        f"gateway.rego:{line}: unknown function '{name}' (not a builtin of this engine)"
    ]


def test_own_functions_imports_and_with_are_not_mistaken_for_missing_builtins(tmp_path):
    engine = load(
        tmp_path,
        {
            "lib/util.rego": "package lib.util\n\nimport rego.v1\n\nshout(s) := upper(s)\n",
            "gateway.rego": HEADER
            + "import data.lib.util\nimport data.lib.util as u\n\n"
            + 'helper(x) := concat("-", [x, x])\n\n'
            + 'decision := {"allow": true, "reason": r} if {\n'
            + '\tr := concat(" ", [util.shout("a"), u.shout("b"), data.lib.util.shout("c"), helper("d")])\n'
            + "\tprobe with input as {}\n"
            + "}\n\nprobe := true\n",
        },
    )
    decision = engine.decide({})
    assert decision.allow is True
    assert decision.reason == "A B C d-d"


@pytest.mark.parametrize(
    ("files", "fragment"),
    [
        ({"gateway.rego": HEADER + "decision := {\n"}, "gateway.rego"),
        (
            {"gateway.rego": "package other\n\nx := 1\n"},
            "no policy defines the decision rule data.gateway.decision",
        ),
        ({"notes.txt": "hello"}, "no .rego policy files found"),
        (
            {"gateway.rego": HEADER + 'decision := {"allow": true}\n', "data.json": "[1]"},
            "data.json: a data file must hold an object",
        ),
        (
            {"gateway.rego": HEADER + 'decision := {"allow": true}\n', "data.json": "{bad"},
            "data.json: cannot read data file",
        ),
        (
            {
                "gateway.rego": HEADER + 'decision := {"allow": true}\n',
                "a.json": '{"k": 1}',
                "b.yaml": "k: 2\n",
            },
            "data.k is set by more than one data file",
        ),
    ],
    ids=[
        "syntax-error",
        "no-decision-rule",
        "no-rego",
        "data-not-object",
        "data-bad-json",
        "data-conflict",
    ],
)
def test_bad_policy_sets_are_refused_with_a_clear_problem(tmp_path, files, fragment):
    with pytest.raises(PolicyLoadError) as caught:
        load(tmp_path, files)
    assert any(fragment in problem for problem in caught.value.problems), caught.value.problems


def test_missing_folder_is_refused(tmp_path):
    with pytest.raises(PolicyLoadError, match="does not exist"):
        EmbeddedEngine().load(tmp_path / "nope")


def test_failed_load_keeps_the_previous_policy_set(tmp_path):
    folder = write(tmp_path / "p", {"gateway.rego": HEADER + 'decision := {"allow": true}\n'})
    engine = EmbeddedEngine()
    engine.load(folder)
    good_version = engine.policy_version
    (folder / "gateway.rego").write_text(HEADER + "decision := io.jwt.decode(input.t)\n")
    with pytest.raises(PolicyLoadError):
        engine.load(folder)
    assert engine.policy_version == good_version
    assert engine.decide({}).allow is True


# --- version ----------------------------------------------------------------------


def test_version_is_a_hash_of_served_files_only(tmp_path):
    folder = write(
        tmp_path / "p",
        {
            "gateway.rego": HEADER + 'decision := {"allow": data.on}\n',
            "data.json": '{"on": true}',
            "gateway_test.rego": "package t\n\nimport rego.v1\n\ntest_a if true\n",
        },
    )
    engine = EmbeddedEngine()
    engine.load(folder)
    first = engine.policy_version
    assert len(first) == 64
    assert engine.decide({}).policy_version == first

    (folder / "gateway_test.rego").write_text("package t\n\nimport rego.v1\n\ntest_b if true\n")
    engine.load(folder)
    assert engine.policy_version == first, "editing a test does not change what is served"

    (folder / "data.json").write_text('{"on": false}')
    engine.load(folder)
    assert engine.policy_version != first
    assert engine.decide({}).allow is False
    assert engine.decide({}).policy_version == engine.policy_version


def test_data_files_are_placed_at_their_folder_path(tmp_path):
    engine = load(
        tmp_path,
        {
            "gateway.rego": HEADER
            + 'decision := {"allow": true, "reason": sprintf("%v %v", [data.top, data.teams.red.lead])}\n',
            "data.json": '{"top": 1}',
            "teams/red/people.yaml": "lead: ana\n",
        },
    )
    assert engine.decide({}).reason == "1 ana"


# --- fail closed -----------------------------------------------------------------


def test_engine_error_at_run_time_raises_policy_error(tmp_path):
    engine = load(
        tmp_path, {"gateway.rego": HEADER + 'decision := {"allow": 1 / input.zero == 1}\n'}
    )
    with pytest.raises(PolicyError, match="divide by zero"):
        engine.decide({"zero": 0})


def test_rust_panic_is_caught_as_policy_error(tmp_path):
    """Using a regorus Engine from another thread panics in Rust (pyo3 PanicException,
    a BaseException): a real panic, and it must become an ordinary PolicyError."""
    engine = load(tmp_path, {"gateway.rego": HEADER + 'decision := {"allow": true}\n'})
    outcome: dict[str, Any] = {}

    def other_thread() -> None:
        try:
            engine.decide({})
        except PolicyError as exc:
            outcome["error"] = exc
        except BaseException as exc:  # what must not happen
            outcome["escaped"] = exc

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join(timeout=10)
    assert "escaped" not in outcome
    assert isinstance(outcome["error"], PolicyError)
    assert isinstance(outcome["error"].__cause__, BaseException)
    assert not isinstance(outcome["error"].__cause__, Exception), "a panic is not an Exception"


def test_decide_before_load_raises_policy_error():
    with pytest.raises(PolicyError):
        EmbeddedEngine().decide({})


# --- value fidelity ----------------------------------------------------------------

TRICKY = [
    'say "hi"',
    "back\\slash",
    "line\nbreak",
    "tab\there",
    "café naïve",
    "emoji 🚀🔥",
    "日本語",
    'mixed "q" \\ \n\t é 🚀',
    "",
]


def _rego_literal(text: str) -> str:
    return (
        '"'
        + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
        + '"'
    )


@pytest.mark.parametrize("text", TRICKY, ids=[f"s{i}" for i in range(len(TRICKY))])
def test_strings_compare_equal_between_input_data_and_literals(tmp_path, text):
    import json

    engine = load(
        tmp_path,
        {
            "gateway.rego": HEADER
            + "decision := {\n"
            + '\t"allow": true,\n'
            + '\t"reason": "",\n'
            + f'\t"tags": {{"input_eq_data": input.s == data.s, "input_eq_literal": input.s == {_rego_literal(text)},\n'
            + f'\t\t"data_eq_literal": data.s == {_rego_literal(text)}, "echo": input.s}},\n'
            + "}\n",
            "data.json": json.dumps({"s": text}),
        },
    )
    tags = engine.decide({"s": text}).tags
    assert tags == {
        "input_eq_data": True,
        "input_eq_literal": True,
        "data_eq_literal": True,
        "echo": text,
    }


def test_known_deviation_count_of_a_string_counts_astral_characters_twice(tmp_path):
    """regorus 0.13 counts a character outside the BMP (emoji) as 2 in count(), where OPA
    counts code points; indexof and substring do count code points. docs/policies.md warns
    policy authors; this test tells us when the engine changes."""
    engine = load(
        tmp_path,
        {
            "gateway.rego": HEADER
            + 'decision := {"allow": true, "tags": {"count": count(input.s), "indexof": indexof(input.s, "b")}}\n'
        },
    )
    assert engine.decide({"s": "a🚀b"}).tags == {"count": 4, "indexof": 2}


def test_booleans_stay_booleans_and_integers_stay_integers(tmp_path):
    engine = load(
        tmp_path,
        {
            "gateway.rego": HEADER
            + 'decision := {"allow": true, "tags": {"t": input.t, "f": input.f, "i": input.i, "big": input.big,\n'
            + '\t"neg": input.neg, "float": input.x, "sum": input.i + 1, "is_bool": is_boolean(input.t),\n'
            + '\t"one_is_true": input.one == true, "data_int": data.n, "data_bool": data.b}}\n',
            "data.json": '{"n": 7, "b": false}',
        },
    )
    tags = engine.decide(
        {"t": True, "f": False, "i": 41, "big": 2**53 + 1, "neg": -3, "x": 1.5, "one": 1}
    ).tags
    assert tags == {
        "t": True,
        "f": False,
        "i": 41,
        "big": 2**53 + 1,
        "neg": -3,
        "float": 1.5,
        "sum": 42,
        "is_bool": True,
        "one_is_true": False,
        "data_int": 7,
        "data_bool": False,
    }
    for key in ("t", "f", "is_bool", "one_is_true", "data_bool"):
        assert type(tags[key]) is bool, key
    for key in ("i", "big", "neg", "sum", "data_int"):
        assert type(tags[key]) is int, key
