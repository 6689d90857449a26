"""parse_config: every bad value is one `path.to.key: problem` line; good configs are frozen.

The configuration reference (docs/configuration.md) is the specification.
"""

from __future__ import annotations

import hashlib
import re
import typing
from pathlib import Path
from typing import Any

import pydantic
import pytest
from pydantic import SecretStr

from gateway.config import (
    AdminListener,
    AuditConfig,
    Config,
    ConfigError,
    Credentials,
    Limits,
    Listener,
    LoopLimit,
    PolicyConfig,
    SessionBudget,
    Storage,
    Tool,
    load_audit_config,
    parse_config,
)
from tests.support.gateway import REPO

HASH_A = hashlib.sha256(b"token-a").hexdigest()
HASH_B = hashlib.sha256(b"token-b").hexdigest()
SECRET = "Bearer zz-tool-secret-value-zz"
# An environment variable name no test machine sets; tests also delete it to be sure.
UNSET = "CALLGATE_TEST_SURELY_UNSET_VAR"


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, Path("/srv/callgate"), {} if env is None else env)
    # ConfigError's message is the problems, one per line.
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def tool(extra: str = "") -> str:
    return "tools:\n  - {name: t, upstream: 'https://tool.example'" + extra + "}\n"


# (id, yaml text, the exact line expected among the problems)
BAD_CONFIGS = [
    (
        "slack-webhook-without-public-url",
        "approvals: {webhooks: [{url: 'https://hooks.slack.com/services/T/B/x', format: slack}]}\n",
        "approvals: a slack webhook links to the action's page: set approvals.public_url",
    ),
    (
        "generic-webhook-without-secret",
        "approvals: {webhooks: [{url: 'https://hooks.example.com/x'}]}\n",
        "approvals.webhooks[0]: a generic webhook needs a secret to sign its deliveries",
    ),
    (
        "webhook-unknown-format",
        "approvals: {webhooks: [{url: 'https://hooks.example.com/x', format: teams}]}\n",
        "approvals.webhooks[0].format: Input should be 'generic' or 'slack'",
    ),
    ("unknown-top-level-key", "colour: red\n", "colour: unknown key"),
    ("unknown-nested-key", tool(", colour: red"), "tools[0].colour: unknown key"),
    (
        "unknown-key-in-listener",
        "listen: {host: 127.0.0.1, prot: 80}\n",
        "listen.prot: unknown key",
    ),
    (
        "listen-port-too-big",
        "listen: {port: 70000}\n",
        "listen.port: Input should be less than or equal to 65535",
    ),
    (
        "admin-port-too-big",
        "admin: {port: 70000}\n",
        "admin.port: Input should be less than or equal to 65535",
    ),
    (
        "policy-engine-unknown",
        "policy: {engine: wasm}\n",
        "policy.engine: Input should be 'embedded' or 'opa'",
    ),
    (
        "policy-opa-url-with-a-path",
        "policy: {engine: opa, opa_url: 'http://opa:8181/v1/data'}\n",
        "policy.opa_url: must be http://host:port or https://host:port (no path)",
    ),
    (
        "policy-decision-dotted",
        "policy: {decision: gateway.decision}\n",
        "policy.decision: String should match pattern "
        "'^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)+$'",
    ),
    (
        "policy-decision-single-segment",
        "policy: {decision: decision}\n",
        "policy.decision: String should match pattern "
        "'^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)+$'",
    ),
    (
        "storage-url-unknown-scheme",
        "storage: {url: 'mysql://db/callgate'}\n",
        "storage.url: must be sqlite:///<path of a file> or postgresql://<host>/<database>",
    ),
    (
        "agent-with-both-token-sources",
        f"agents: [{{id: a, token_sha256: '{HASH_A}', token_env: HOME}}]\n",
        "agents[0]: give exactly one of token_sha256 or token_env",
    ),
    (
        "agent-with-no-token-source",
        "agents: [{id: a, roles: [support]}]\n",
        "agents[0]: give exactly one of token_sha256 or token_env",
    ),
    (
        "approver-with-no-token-source",
        "approvers: [{id: alice}]\n",
        "approvers[0]: give exactly one of token_sha256 or token_env",
    ),
    (
        "token-sha256-too-short",
        "agents: [{id: a, token_sha256: 'abc123'}]\n",
        "agents[0].token_sha256: String should match pattern '^[0-9a-fA-F]{64}$'",
    ),
    (
        "token-sha256-not-hex",
        f"agents: [{{id: a, token_sha256: '{'g' * 64}'}}]\n",
        "agents[0].token_sha256: String should match pattern '^[0-9a-fA-F]{64}$'",
    ),
    (
        "upstream-not-http",
        "tools: [{name: t, upstream: 'ftp://files.example'}]\n",
        "tools[0].upstream: must be an absolute http:// or https:// URL",
    ),
    (
        "upstream-relative",
        "tools: [{name: t, upstream: '/just/a/path'}]\n",
        "tools[0].upstream: must be an absolute http:// or https:// URL",
    ),
    (
        "upstream-with-userinfo",
        "tools: [{name: t, upstream: 'https://user:pw@x'}]\n",
        "tools[0].upstream: must not carry credentials; use credentials: {header, value}",
    ),
    (
        "upstream-with-query",
        "tools: [{name: t, upstream: 'https://x/api?key=1'}]\n",
        "tools[0].upstream: must not have a query string or fragment",
    ),
    (
        "upstream-with-fragment",
        "tools: [{name: t, upstream: 'https://x/api#top'}]\n",
        "tools[0].upstream: must not have a query string or fragment",
    ),
    (
        "tool-kind-unknown",
        tool(", kind: grpc"),
        "tools[0].kind: Input should be 'http' or 'mcp'",
    ),
    (
        "timeout-zero",
        tool(", timeout_s: 0"),
        "tools[0].timeout_s: Input should be greater than 0",
    ),
    (
        "timeout-negative",
        tool(", timeout_s: -1.5"),
        "tools[0].timeout_s: Input should be greater than 0",
    ),
    (
        "max-body-bytes-negative",
        tool(", max_body_bytes: -1"),
        "tools[0].max_body_bytes: Input should be greater than or equal to 0",
    ),
    (
        "missing-env-in-credentials",
        tool(", credentials: {header: Authorization, value: 'Bearer ${MISSING}'}"),
        "tools[0].credentials.value: environment variable MISSING is not set",
    ),
    (
        "missing-env-in-nested-list",
        "agents: [{id: a, token_sha256: '" + HASH_A + "', roles: [ok, '${NOPE}']}]\n",
        "agents[0].roles[1]: environment variable NOPE is not set",
    ),
    (
        "audit-not-sqlite",
        "audit: {url: 'audit.db'}\n",
        "audit.url: must be sqlite:///<path of a file> or postgresql://<host>/<database>",
    ),
    (
        "audit-synchronous-off",
        "audit: {synchronous: 'OFF'}\n",
        "audit.synchronous: Input should be 'NORMAL' or 'FULL'",
    ),
    ("audit-unknown-key", "audit: {path: x.db}\n", "audit.path: unknown key"),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [(text, expected) for _, text, expected in BAD_CONFIGS],
    ids=[case_id for case_id, _, _ in BAD_CONFIGS],
)
def test_bad_config_names_the_key(text: str, expected: str) -> None:
    assert expected in problems_of(text)


def test_the_store_url_and_its_password_are_never_shown(tmp_path: Path) -> None:
    config = parse_config("storage: {url: 'postgresql://gw:s3cret@db/callgate'}", tmp_path)
    assert "s3cret" not in repr(config) and "s3cret" not in repr(config.storage)
    # A URL the model refuses is not quoted in the message either.
    problems = problems_of("storage: {url: 'mysql://gw:s3cret@db/callgate', pool_size: 0}")
    assert len(problems) == 2 and not any("s3cret" in problem for problem in problems)


def test_postgresql_urls_are_taken_for_the_store_and_the_audit_log(tmp_path: Path) -> None:
    text = "storage: {url: 'postgresql://db/callgate'}\naudit: {url: 'postgresql://db/audit'}\n"
    config = parse_config(text, tmp_path)
    assert (config.storage.url, config.audit.url) == (
        "postgresql://db/callgate",
        "postgresql://db/audit",
    )


def test_the_password_in_audit_url_is_never_printed(tmp_path: Path) -> None:
    text = "audit: {url: 'postgresql://gate:s3cret@db:5432/audit?options=-csearch_path%3Dx'}\n"
    config = parse_config(text, tmp_path)
    assert config.audit.url == "postgresql://gate:s3cret@db:5432/audit?options=-csearch_path%3Dx"
    for shown in (repr(config), str(config), repr(config.audit), str(config.audit)):
        assert "s3cret" not in shown
    assert "url='postgresql://gate:***@db:5432/audit?options=-csearch_path%3Dx'" in repr(
        config.audit
    )


def test_missing_env_is_the_only_problem_for_a_secret() -> None:
    text = tool(", credentials: {header: Authorization, value: 'Bearer ${MISSING}'}")
    assert problems_of(text) == [
        "tools[0].credentials.value: environment variable MISSING is not set"
    ]


def test_token_env_naming_an_unset_variable_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(UNSET, raising=False)
    problems = problems_of(f"agents: [{{id: a, token_env: {UNSET}}}]\n")
    assert len(problems) == 1
    assert problems[0].startswith("agents[0]")
    assert problems[0].endswith(f"environment variable {UNSET} is not set")


def test_token_env_naming_an_unset_variable_names_the_key_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(UNSET, raising=False)
    assert problems_of(f"agents: [{{id: a, token_env: {UNSET}}}]\n") == [
        f"agents[0].token_env: environment variable {UNSET} is not set"
    ]


def test_token_env_is_checked_against_the_env_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(UNSET, raising=False)
    config = parse_config(
        f"agents: [{{id: a, token_env: {UNSET}}}]\n", Path("/srv"), {UNSET: "tok"}
    )
    assert config.agents[0].token_digest == hashlib.sha256(b"tok").digest()


DUPLICATES = [
    (
        "duplicate-agent-ids",
        f"agents: [{{id: a, token_sha256: '{HASH_A}'}}, {{id: a, token_sha256: '{HASH_B}'}}]\n",
        "agents[1].id: 'a' is used twice",
    ),
    (
        "duplicate-approver-ids",
        f"approvers: [{{id: x, token_sha256: '{HASH_A}'}}, {{id: x, token_sha256: '{HASH_B}'}}]\n",
        "approvers[1].id: 'x' is used twice",
    ),
    (
        "duplicate-tool-names",
        "tools: [{name: t, upstream: 'http://a'}, {name: t, upstream: 'http://b'}]\n",
        "tools[1].name: 't' is used twice",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [(text, expected) for _, text, expected in DUPLICATES],
    ids=[case_id for case_id, _, _ in DUPLICATES],
)
def test_duplicates_name_the_key_path(text: str, expected: str) -> None:
    assert problems_of(text) == [expected]


SHARED_TOKENS = [
    (
        "two-agents-same-hash",
        f"agents: [{{id: a, token_sha256: '{HASH_A}'}}, {{id: b, token_sha256: '{HASH_A}'}}]\n",
    ),
    (
        "same-hash-in-other-case",
        f"agents: [{{id: a, token_sha256: '{HASH_A}'}}, "
        f"{{id: b, token_sha256: '{HASH_A.upper()}'}}]\n",
    ),
]


@pytest.mark.parametrize(
    "text", [text for _, text in SHARED_TOKENS], ids=[i for i, _ in SHARED_TOKENS]
)
def test_two_agents_sharing_a_token_are_refused(text: str) -> None:
    assert problems_of(text) == ["agents[1].token_sha256: same token as agents[0]"]


def test_agent_and_approver_sharing_a_token_are_refused() -> None:
    text = (
        f"agents: [{{id: a, token_sha256: '{HASH_A}'}}]\n"
        f"approvers: [{{id: b, token_sha256: '{HASH_A}'}}]\n"
    )
    assert problems_of(text) == ["approvers[0].token_sha256: same token as agents[0]"]


def test_shared_token_names_the_key_path() -> None:
    text = f"agents: [{{id: a, token_sha256: '{HASH_A}'}}, {{id: b, token_sha256: '{HASH_A}'}}]\n"
    problems = problems_of(text)
    assert len(problems) == 1
    assert problems[0].startswith("agents[1].token_sha256: ")
    assert "agents[0]" in problems[0]


def test_several_errors_are_all_reported_one_per_line() -> None:
    text = (
        "colour: red\n"
        "listen: {port: 70000}\n"
        "policy: {engine: opa, opa_url: 'opa:8181'}\n"
        "tools:\n"
        "  - name: t\n"
        "    upstream: 'ftp://x'\n"
        "    kind: grpc\n"
        "    credentials: {header: Authorization, value: '${MISSING}'}\n"
    )
    problems = problems_of(text)
    assert sorted(problems) == sorted(
        [
            "colour: unknown key",
            "listen.port: Input should be less than or equal to 65535",
            "policy.opa_url: must be http://host:port or https://host:port (no path)",
            "tools[0].upstream: must be an absolute http:// or https:// URL",
            "tools[0].kind: Input should be 'http' or 'mcp'",
            "tools[0].credentials.value: environment variable MISSING is not set",
        ]
    )
    assert all("\n" not in p for p in problems)


def test_duplicates_are_reported_alongside_other_errors() -> None:
    text = (
        "listen: {port: 70000}\n"
        "tools: [{name: t, upstream: 'http://a'}, {name: t, upstream: 'http://b'}]\n"
    )
    problems = problems_of(text)
    assert "listen.port: Input should be less than or equal to 65535" in problems
    assert "tools[1].name: 't' is used twice" in problems


def test_not_a_mapping() -> None:
    assert problems_of("- just\n- a list\n") == ["(top level): must be a mapping of keys"]


def test_yaml_syntax_error_does_not_quote_a_secret() -> None:
    text = tool(f', credentials: {{header: Authorization, value: "{SECRET}') + "x: [\n"
    problems = problems_of(text)
    assert len(problems) == 1
    assert problems[0].startswith("(file): not valid YAML")
    assert SECRET not in problems[0]
    assert "zz-tool-secret" not in problems[0]


# --- what a valid config means ------------------------------------------------------


def test_env_is_interpolated_and_double_dollar_is_a_dollar() -> None:
    text = (
        "storage: {url: 'sqlite:///${DB_DIR}/cg.db'}\n"
        "tools:\n"
        "  - name: t\n"
        "    upstream: 'https://${HOST}:${PORT}/api'\n"
        "    credentials: {header: X-Key, value: 'k$$1-${KEY}-$${KEY}-a$b'}\n"
    )
    env = {"DB_DIR": "/var/db", "HOST": "tool.internal", "PORT": "8443", "KEY": "abc"}
    config = parse_config(text, Path("/srv"), env)
    assert config.storage.url == "sqlite:////var/db/cg.db"
    assert config.tools[0].upstream == "https://tool.internal:8443/api"
    assert config.tools[0].credentials is not None
    assert config.tools[0].credentials.value.get_secret_value() == "k$1-abc-${KEY}-a$b"


def test_env_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLGATE_TEST_TOOL_HOST", "from-os-environ.example")
    config = parse_config(
        "tools: [{name: t, upstream: 'https://${CALLGATE_TEST_TOOL_HOST}'}]\n", Path("/srv")
    )
    assert config.tools[0].upstream == "https://from-os-environ.example"


def test_env_param_replaces_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLGATE_TEST_KEY", "from-os-environ")
    assert problems_of(
        tool(", credentials: {header: X-Key, value: '${CALLGATE_TEST_KEY}'}"), env={}
    ) == ["tools[0].credentials.value: environment variable CALLGATE_TEST_KEY is not set"]


def test_missing_env_is_one_problem_even_where_the_value_is_required() -> None:
    assert problems_of("tools: [{name: t, upstream: 'https://${TOOL_HOST}'}]\n") == [
        "tools[0].upstream: environment variable TOOL_HOST is not set"
    ]


def test_relative_policy_path_is_resolved_against_base_dir(tmp_path: Path) -> None:
    config = parse_config("policy: {path: ./rules/../rego}\n", tmp_path, {})
    assert config.policy.path == tmp_path.resolve() / "rego"


def test_default_policy_path_is_next_to_the_config(tmp_path: Path) -> None:
    config = parse_config("", tmp_path, {})
    assert config.policy.path == tmp_path.resolve() / "policies"


def test_absolute_policy_path_is_kept(tmp_path: Path) -> None:
    config = parse_config(f"policy: {{path: '{tmp_path}/abs'}}\n", Path("/elsewhere"), {})
    assert config.policy.path == tmp_path / "abs"


def test_defaults_of_an_empty_config(tmp_path: Path) -> None:
    config = parse_config("", tmp_path, {})
    assert config == Config(
        listen=Listener(host="127.0.0.1", port=8080),
        admin=AdminListener(host="127.0.0.1", port=8081),
        storage=Storage(
            url=f"sqlite:///{tmp_path.resolve()}/callgate-data/callgate.db", synchronous="FULL"
        ),
        audit=AuditConfig(
            enabled=True,
            url=f"sqlite:///{tmp_path.resolve()}/callgate-data/audit.db",
            synchronous="NORMAL",
            record_bodies=False,
            max_queued=100_000,
        ),
        policy=PolicyConfig(
            engine="embedded",
            path=tmp_path.resolve() / "policies",
            decision="gateway/decision",
            opa_url="http://127.0.0.1:8181",
        ),
        agents=(),
        approvers=(),
        limits=Limits(
            loop=LoopLimit(max_repeats=5, window_s=60),
            session_budget=SessionBudget(max_calls=500, window_s=3600),
        ),
        tools=(),
    )
    assert config.policy.decision_rule == "data.gateway.decision"


def test_defaults_spelled_out() -> None:
    config = parse_config(
        f"agents: [{{id: bot, token_sha256: '{HASH_A}'}}]\n"
        "tools: [{name: demo, upstream: 'http://127.0.0.1:9090/'}]\n",
        Path("/srv"),
        {},
    )
    assert (config.listen.host, config.listen.port) == ("127.0.0.1", 8080)
    assert (config.admin.host, config.admin.port) == ("127.0.0.1", 8081)
    assert config.storage.path.name == "callgate.db"
    assert config.policy.engine == "embedded"
    assert config.policy.decision == "gateway/decision"
    assert config.policy.opa_url == "http://127.0.0.1:8181"
    assert config.agents[0].roles == ()
    assert config.approvers == ()
    assert config.limits.loop == LoopLimit(max_repeats=5, window_s=60)
    assert config.limits.session_budget == SessionBudget(max_calls=500, window_s=3600)
    demo = config.tools[0]
    assert demo == Tool(
        name="demo",
        upstream="http://127.0.0.1:9090",
        credentials=None,
        timeout_s=10,
        max_body_bytes=1_048_576,
        kind="http",
        limits=None,
    )


def test_admin_port_given_alone_keeps_admin_default_host() -> None:
    config = parse_config("admin: {port: 9999}\nlisten: {host: 0.0.0.0}\n", Path("/srv"), {})
    assert config.admin == AdminListener(host="127.0.0.1", port=9999)
    assert config.listen == Listener(host="0.0.0.0", port=8080)


def test_example_config_is_valid() -> None:
    example = REPO / "examples" / "callgate.yaml"
    config = parse_config(example.read_text(), example.parent, {"DEMO_TOOL_TOKEN": "t0k"})
    assert [a.id for a in config.agents] == ["support-bot", "audit-bot"]
    assert config.policy.path == example.parent.parent.resolve() / "policies"
    assert config.tools[0].credentials == Credentials(
        header="Authorization", value=SecretStr("Bearer t0k")
    )


def test_secrets_never_show(tmp_path: Path) -> None:
    config = parse_config(
        tool(", credentials: {header: Authorization, value: '${TOKEN}'}"),
        tmp_path,
        {"TOKEN": SECRET},
    )
    credentials = config.tools[0].credentials
    assert credentials is not None
    assert credentials.value.get_secret_value() == SECRET
    for shown in (repr(config), str(config), config.model_dump_json(), repr(credentials)):
        assert SECRET not in shown
        assert "zz-tool-secret" not in shown
        assert "**********" in shown
    assert '"credentials":{"header":"Authorization","value":"**********"}' in (
        config.model_dump_json()
    )


def test_config_is_frozen(tmp_path: Path) -> None:
    config = parse_config(tool(), tmp_path, {})
    with pytest.raises(pydantic.ValidationError, match="Instance is frozen"):
        config.listen.port = 1
    with pytest.raises(pydantic.ValidationError, match="Instance is frozen"):
        config.tools = ()
    with pytest.raises(pydantic.ValidationError, match="Instance is frozen"):
        config.tools[0].upstream = "http://evil.example"
    assert isinstance(config.tools, tuple)
    assert isinstance(config.agents, tuple)
    assert config.listen.port == 8080
    assert config.tools[0].upstream == "https://tool.example"


def test_token_digest_from_token_sha256() -> None:
    config = parse_config(f"agents: [{{id: a, token_sha256: '{HASH_A.upper()}'}}]\n", Path("/"))
    assert config.agents[0].token_digest == hashlib.sha256(b"token-a").digest()


def test_token_digest_from_token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLGATE_TEST_BOT_TOKEN", "the-bot-token")
    config = parse_config(
        "agents: [{id: a, token_env: CALLGATE_TEST_BOT_TOKEN, roles: [support]}]\n", Path("/")
    )
    agent = config.agents[0]
    assert agent.token_digest == hashlib.sha256(b"the-bot-token").digest()
    assert agent.roles == ("support",)
    assert "the-bot-token" not in repr(config)


def test_the_audit_file_is_relative_to_the_config_folder(tmp_path: Path) -> None:
    config = parse_config("audit: {url: 'sqlite:///logs/a.db'}\n", tmp_path, {})
    assert config.audit.path == tmp_path.resolve() / "logs" / "a.db"
    absolute = parse_config(f"audit: {{url: 'sqlite:///{tmp_path}/b.db'}}\n", tmp_path, {})
    assert absolute.audit.path == tmp_path / "b.db"


def test_the_audit_section_loads_without_the_gateways_secrets(tmp_path: Path) -> None:
    """`callgate audit` tools need the audit file, not the tool credentials' variables."""
    path = tmp_path / "callgate.yaml"
    path.write_text(
        tool(", credentials: {header: X-Key, value: '${NOT_SET_HERE}'}")
        + "audit: {url: 'sqlite:///${AUDIT_DIR}/a.db', synchronous: FULL}\n"
    )
    audit = load_audit_config(path, {"AUDIT_DIR": "data"})
    assert audit.path == tmp_path.resolve() / "data" / "a.db"
    assert audit.synchronous == "FULL"
    with pytest.raises(ConfigError) as missing:
        load_audit_config(path, {})
    assert missing.value.problems == ["audit.url: environment variable AUDIT_DIR is not set"]
    path.write_text("audit: {synchronous: sometimes}\n")
    with pytest.raises(ConfigError) as bad:
        load_audit_config(path, {})
    assert bad.value.problems == ["audit.synchronous: Input should be 'NORMAL' or 'FULL'"]


# --- the configuration reference ------------------------------------------------------


def _model_in(annotation: Any) -> tuple[type[pydantic.BaseModel] | None, bool]:
    """The model a field holds, and whether it holds a list of them."""
    for arg in (annotation, *typing.get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, pydantic.BaseModel):
            return arg, False
        if typing.get_origin(arg) in (list, tuple):
            inner, _ = _model_in(typing.get_args(arg)[0])
            if inner is not None:
                return inner, True
    return None, False


def _config_keys(model: type[pydantic.BaseModel], prefix: str = "") -> set[str]:
    """Every key callgate.yaml accepts, as the reference writes them: `tools[].name`."""
    keys = set()
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        inner, is_list = _model_in(field.annotation)
        keys.add(key + "[]" if is_list else key)
        if inner is not None:
            keys |= _config_keys(inner, key + ("[]." if is_list else "."))
    return keys


def _documented_keys() -> set[str]:
    """The keys in the first column of docs/configuration.md's table."""
    text = (REPO / "docs" / "configuration.md").read_text()
    rows = re.findall(r"^\| (`[^|]+`) \|", text, re.MULTILINE)
    assert rows, "the table of docs/configuration.md was not found"
    return {key for row in rows for key in re.findall(r"`([^`]+)`", row)}


def test_the_reference_documents_only_keys_the_config_accepts() -> None:
    assert _documented_keys() - _config_keys(Config) == set()


def test_every_config_key_is_in_the_reference() -> None:
    """A key is documented by its own row or by the row of the section it belongs to
    (`limits.loop` documents `limits.loop.max_repeats`)."""
    documented = _documented_keys()

    def covered(key: str) -> bool:
        parts = key.split(".")
        return any(".".join(parts[:n]) in documented for n in range(1, len(parts) + 1))

    # The top-level sections (`listen`, `tools[]`) are documented key by key.
    sections = {key for key in _config_keys(Config) if "." not in key and not covered(key)}
    assert all(any(k.startswith(f"{s}.") for k in documented) for s in sections), sections
    missing = {key for key in _config_keys(Config) - sections if not covered(key)}
    assert missing == set()


# --- limits.storage (docs/limits.md, "Limits on Redis") --------------------------------

REDIS_PASSWORD = "zz-redis-password-zz"


def test_limits_are_counted_in_memory_by_default() -> None:
    limits = parse_config("", Path("/"), {}).limits
    assert (limits.redis_url, limits.where, limits.key_prefix) == (None, "memory", "callgate:")


def test_a_redis_password_never_shows(tmp_path: Path) -> None:
    config = parse_config(
        "limits: {storage: 'redis://:${REDIS_PASSWORD}@redis.internal:6380/2', "
        "key_prefix: 'team-a:', pool_size: 4, connect_timeout_s: 0.2, timeout_s: 0.3}\n",
        tmp_path,
        {"REDIS_PASSWORD": REDIS_PASSWORD},
    )
    limits = config.limits
    assert limits.redis_url == f"redis://:{REDIS_PASSWORD}@redis.internal:6380/2"
    assert limits.where == "redis://***@redis.internal:6380/2"
    assert (limits.key_prefix, limits.pool_size, limits.timeout_s) == ("team-a:", 4, 0.3)
    for shown in (repr(config), str(config), config.model_dump_json(), repr(limits)):
        assert REDIS_PASSWORD not in shown


@pytest.mark.parametrize(
    "storage",
    [
        f"redis://:{REDIS_PASSWORD}@",  # no host
        f"redis://:{REDIS_PASSWORD}@redis.internal:port",
        f"http://:{REDIS_PASSWORD}@redis.internal",
        f"postgresql://u:{REDIS_PASSWORD}@db",
        "memroy",
    ],
)
def test_a_bad_limits_storage_is_refused_without_quoting_it(storage: str) -> None:
    with pytest.raises(ConfigError) as bad:
        parse_config(f"limits: {{storage: '{storage}'}}\n", Path("/"), {})
    assert bad.value.problems == [
        "limits.storage: must be memory or a redis:// or rediss:// URL with a host"
    ]
    with pytest.raises(pydantic.ValidationError) as direct:
        Limits(storage=SecretStr(storage))
    assert REDIS_PASSWORD not in str(direct.value)


def test_where_limits_are_counted_is_not_a_tools_setting() -> None:
    with pytest.raises(ConfigError) as bad:
        parse_config(
            "tools: [{name: t, upstream: 'https://tool.example', "
            "limits: {storage: 'redis://127.0.0.1', per_tool: {limit: 1}}}]\n",
            Path("/"),
            {},
        )
    assert bad.value.problems == ["tools[0].limits.storage: unknown key"]
