"""The tool keys of capped and scrubbed answers (docs/configuration.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.config import ConfigError, parse_config


def tool_config(tmp_path: Path, env: dict[str, str] | None = None, **tool: object):
    tree = {"tools": [{"name": "t", "upstream": "http://127.0.0.1:9", **tool}]}
    return parse_config(yaml.safe_dump(tree), tmp_path, env or {})


def test_defaults(tmp_path):
    tool = tool_config(tmp_path).tools[0]
    assert (tool.max_response_bytes, tool.redact_response, tool.max_match_bytes) == (
        10 * 1024 * 1024,
        (),
        256,
    )
    assert tool.secrets == ()


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [("sk_[", "is not a regular expression"), ("x*", "matches empty text")],
)
def test_a_pattern_that_cannot_work_is_refused(tmp_path, pattern, problem):
    with pytest.raises(ConfigError) as refused:
        tool_config(tmp_path, redact_response=[pattern])
    assert refused.value.problems[0].startswith("tools[0].redact_response")
    assert problem in refused.value.problems[0]


def test_secrets_are_the_credential_and_every_env_value_of_the_tool(tmp_path):
    env = {"TOKEN": "tok-0123456789", "SHORT": "abc", "PATH_PART": "reports-v2-internal"}
    config = tool_config(
        tmp_path,
        env,
        upstream="http://127.0.0.1:9/${PATH_PART}",
        credentials={"header": "Authorization", "value": "Bearer ${TOKEN}"},
        redact_response=["${SHORT}[0-9]+"],
    )
    # Shorter than 8 characters: not looked for (it would match ordinary text).
    assert set(config.tools[0].secrets) == {
        "tok-0123456789",
        "Bearer tok-0123456789",
        "reports-v2-internal",
    }


def test_a_literal_credential_is_a_secret_too(tmp_path):
    config = tool_config(tmp_path, credentials={"header": "X-Key", "value": "literal-key-1"})
    assert config.tools[0].secrets == ("literal-key-1",)


def test_a_typed_tool_keeps_its_secrets_and_its_document_path(tmp_path):
    """A tool with both an OpenAPI document and `${ENV}` secrets: resolving one must not
    drop the other (each is a copy of the tool made while the config is read)."""
    tool = tool_config(
        tmp_path,
        {"TOKEN": "tok-0123456789"},
        openapi="specs/payments.yaml",
        credentials={"header": "Authorization", "value": "Bearer ${TOKEN}"},
    ).tools[0]
    assert tool.openapi == str(tmp_path / "specs" / "payments.yaml")
    assert "tok-0123456789" in tool.secrets
