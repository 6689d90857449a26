"""Fuzz: config files. `parse_config` either returns a Config or raises ConfigError naming
the problems (docs/configuration.md); never another exception, whatever the
YAML holds: wrong types at any key, unknown keys, odd scalars, `${ENV}` references, deep or
strange trees, and text that is not YAML at all.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, note
from hypothesis import strategies as st

from gateway.config import Config, ConfigError, parse_config
from tests.support.fuzz import fuzz

ENV = {"TOKEN": "t0ken", "EMPTY": "", "SECRET": "Bearer s3cret"}
HEX = "a" * 64

VALID: dict[str, Any] = {
    "listen": {"host": "127.0.0.1", "port": 8080},
    "admin": {"host": "127.0.0.1", "port": 8081},
    "storage": {"url": "sqlite:///./data/callgate.db", "synchronous": "FULL"},
    "audit": {"url": "sqlite:///./data/audit.db", "record_bodies": False, "max_queued": 100},
    "approvals": {
        "default_ttl_s": 3600,
        "max_wait_s": 55,
        "webhooks": [{"url": "https://hooks.example/x", "secret": "s"}],
    },
    "policy": {"engine": "embedded", "path": "./policies", "watch": False},
    "agents": [
        {"id": "bot", "token_sha256": HEX, "roles": ["caller"]},
        {"id": "env-bot", "token_env": "TOKEN"},
    ],
    "approvers": [{"id": "alice", "token_sha256": "b" * 64, "roles": ["operator"]}],
    "limits": {
        "loop": {"max_repeats": 5, "window_s": 60},
        "per_agent": {"limit": 5, "window_s": 60},
    },
    "idempotency": {"ttl_s": 60},
    "protection": {"max_json_depth": 64, "refusals": {"limit": 10, "window_s": 10}},
    "tools": [
        {
            "name": "demo",
            "upstream": "http://127.0.0.1:9000/api",
            "credentials": {"header": "Authorization", "value": "${SECRET}"},
            "timeout_s": 5,
            "limits": {"loop": None},
            "kind": "http",
            "forwarded_headers": "strip",
        },
        {"name": "mcp", "upstream": "http://127.0.0.1:9001/mcp", "kind": "mcp"},
    ],
}

scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(
        [
            "${TOKEN}",
            "${MISSING}",
            "$$",
            "${",
            "${EMPTY}",
            "sqlite://",
            "postgresql://x",
            "http://u:p@h/",
            "0",
            "-1",
            "1e309",
            "nan",
            "~",
            "yes",
            "*",
            "/",
            "..",
            "\x00",
        ]
    ),
)
tree = st.recursive(
    scalar,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.one_of(st.text(max_size=8), st.integers(), st.none()), inner, max_size=3
        )
    ),
    max_leaves=10,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def mutated_configs(draw: Any) -> Any:
    """The valid config with a few of its keys replaced, removed, or given a sibling."""
    config = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(config)
        where = draw(st.sampled_from(paths))
        if not where:
            continue
        parent = config
        for part in where[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "replace", "delete", "sibling"]))
        if action == "replace":
            parent[where[-1]] = draw(tree)
        elif action == "delete" and isinstance(parent, dict):
            del parent[where[-1]]
        elif action == "sibling" and isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(tree)
    return config


def _parse(text: str, tmp_path: Path) -> None:
    try:
        result = parse_config(text, tmp_path, env=ENV)
    except ConfigError as error:
        assert error.problems and all(isinstance(p, str) and p for p in error.problems)
        assert "s3cret" not in str(error), "a credential leaked into a config error"
    else:
        assert isinstance(result, Config)


def test_the_unmutated_config_is_valid(tmp_path: Path) -> None:
    _parse(yaml.safe_dump(VALID), tmp_path)
    assert parse_config(yaml.safe_dump(VALID), tmp_path, env=ENV).tools[0].name == "demo"


@pytest.mark.parametrize("section, key", [("agents", "id"), ("approvers", "id"), ("tools", "name")])
def test_an_unhashable_name_is_a_config_error(tmp_path: Path, section: str, key: str) -> None:
    config = copy.deepcopy(VALID)
    config[section][0][key] = ["a", "list"]
    _parse(yaml.safe_dump(config), tmp_path)


@fuzz(examples=2000)
@given(config=mutated_configs())
def test_mutated_configs_are_accepted_or_refused_with_config_error(
    tmp_path: Path, config: Any
) -> None:
    text = yaml.safe_dump(config, allow_unicode=True)
    note(text)
    _parse(text, tmp_path)


@fuzz(examples=1000)
@given(config=tree)
def test_arbitrary_trees_are_refused_with_config_error(tmp_path: Path, config: Any) -> None:
    _parse(yaml.safe_dump(config, allow_unicode=True), tmp_path)


@fuzz(examples=1000)
@given(text=st.text(alphabet=st.sampled_from(list("ab:-[]{}&*!|>'\"%@`#,?\n \t${}0")), max_size=40))
def test_text_that_is_hardly_yaml_is_refused_with_config_error(tmp_path: Path, text: str) -> None:
    _parse(text, tmp_path)
