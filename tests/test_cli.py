"""The `callgate` command, run for real in subprocesses (`python -m gateway` == `callgate`)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.policy.loader import read_policy_dir
from tests.support.gateway import ALLOW_ALL_REGO, DEFAULT_POLICIES, sha
from tests.support.process import free_port

TIMEOUT = 30
AGENT_TOKEN = "cli-agent-token"
SECRET = "zz-cli-tool-secret-zz"

UNKNOWN_BUILTIN_REGO = """package gateway

import rego.v1

default decision := {"allow": false}

claims := io.jwt.decode(input.token)
"""

SYNTAX_ERROR_REGO = """package gateway

import rego.v1

decision := {"allow": true if {
"""


def cli_env() -> dict[str, str]:
    return {**os.environ, "RUST_LIB_BACKTRACE": "0", "CLI_TOOL_SECRET": SECRET}


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=cwd,
        env=cli_env(),
    )


def port_is_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def policy_folder(root: Path, rego: str = ALLOW_ALL_REGO, name: str = "policies") -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "gateway.rego").write_text(rego)
    return folder


def write_config(
    root: Path,
    *,
    policy_path: str = "./policies",
    listen_port: int = 18080,
    admin_port: int = 18081,
    extra: dict[str, Any] | None = None,
) -> Path:
    tree: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": listen_port},
        "admin": {"host": "127.0.0.1", "port": admin_port},
        "policy": {"path": policy_path},
        "agents": [{"id": "bot", "token_sha256": sha(AGENT_TOKEN), "roles": ["caller"]}],
        "tools": [
            {
                "name": "echo",
                "upstream": "http://127.0.0.1:9",
                "credentials": {"header": "Authorization", "value": "Bearer ${CLI_TOOL_SECRET}"},
            }
        ],
        **(extra or {}),
    }
    path = root / "callgate.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


INVALID_LINES = [
    "colour: unknown key",
    "listen.port: Input should be less than or equal to 65535",
    "tools[0].upstream: must be an absolute http:// or https:// URL",
    "tools[0].kind: Input should be 'http' or 'mcp'",
    "tools[0].credentials.value: environment variable CALLGATE_CLI_UNSET is not set",
]


def write_invalid_config(root: Path) -> Path:
    path = root / "broken.yaml"
    path.write_text(
        "colour: red\n"
        "listen: {port: 70000}\n"
        "tools:\n"
        "  - name: t\n"
        "    upstream: ftp://x\n"
        "    kind: grpc\n"
        "    credentials: {header: Authorization, value: '${CALLGATE_CLI_UNSET}'}\n"
    )
    return path


# --- config check ---------------------------------------------------------------------


def test_config_check_valid(tmp_path: Path) -> None:
    policies = policy_folder(tmp_path)
    config = write_config(tmp_path)
    result = run_cli("config", "check", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"ok: 1 agents, 1 tools, policies in {policies.resolve()}\n"
    assert SECRET not in result.stdout + result.stderr


def test_config_check_never_prints_the_redis_password(tmp_path: Path) -> None:
    policy_folder(tmp_path)
    for storage, code in (
        ("redis://:${CLI_TOOL_SECRET}@redis.internal:6379/0", 0),
        ("redis://:${CLI_TOOL_SECRET}@", 2),  # no host
    ):
        config = write_config(tmp_path, extra={"limits": {"storage": storage}})
        result = run_cli("config", "check", str(config))
        assert result.returncode == code, result.stderr
        assert SECRET not in result.stdout + result.stderr
    assert "limits.storage: must be memory or a redis:// or rediss:// URL" in result.stderr


def test_config_check_resolves_policy_path_from_config_folder_not_cwd(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    policies = policy_folder(tmp_path / "conf")
    config = write_config(tmp_path / "conf")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_cli("config", "check", str(config), cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"ok: 1 agents, 1 tools, policies in {policies.resolve()}\n"


def test_config_check_example_with_repo_policies() -> None:
    example = DEFAULT_POLICIES.parent / "examples" / "callgate.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "config", "check", str(example)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**cli_env(), "DEMO_TOOL_TOKEN": "x"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"ok: 2 agents, 1 tools, policies in {DEFAULT_POLICIES}\n"


def test_config_check_reports_every_problem_on_stderr(tmp_path: Path) -> None:
    config = write_invalid_config(tmp_path)
    result = run_cli("config", "check", str(config))
    assert result.returncode == 2
    assert result.stdout == ""
    assert sorted(result.stderr.splitlines()) == sorted(
        f"{config}: {line}" for line in INVALID_LINES
    )


def test_config_check_does_not_print_secrets_in_errors(tmp_path: Path) -> None:
    policy_folder(tmp_path)
    config = write_config(tmp_path, extra={"colour": "red"})
    result = run_cli("config", "check", str(config))
    assert result.returncode == 2
    assert result.stderr == f"{config}: colour: unknown key\n"
    assert SECRET not in result.stderr


def test_config_check_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = run_cli("config", "check", str(missing))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"{missing}: (file): cannot read {missing}: No such file or directory\n"
    )


def test_config_check_policy_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    policy_folder(tmp_path, SYNTAX_ERROR_REGO)
    result = run_cli("config", "check", str(write_config(tmp_path)))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == "policy: gateway.rego:5:28: expecting `}` while parsing object\n"


def test_config_check_unsupported_builtin_names_file_and_line(tmp_path: Path) -> None:
    policy_folder(tmp_path, UNKNOWN_BUILTIN_REGO)
    result = run_cli("config", "check", str(write_config(tmp_path)))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "policy: gateway.rego:7: unknown function 'io.jwt.decode' (not a builtin of this engine)\n"
    )


def test_config_check_refuses_policies_whose_rego_tests_fail(tmp_path: Path) -> None:
    folder = policy_folder(tmp_path)
    (folder / "gateway_test.rego").write_text(
        "package gateway_test\n\nimport rego.v1\n\nimport data.gateway\n\n"
        "test_everyone_allowed if gateway.decision.allow\n"
    )
    result = run_cli("config", "check", str(write_config(tmp_path)))
    assert result.returncode == 2
    assert result.stderr == (
        "policy: gateway_test.rego: data.gateway_test.test_everyone_allowed failed: "
        "evaluated to undefined at gateway_test.rego:7: gateway.decision.allow\n"
    )


def test_config_check_missing_policy_folder(tmp_path: Path) -> None:
    result = run_cli("config", "check", str(write_config(tmp_path)))
    assert result.returncode == 2
    assert (
        result.stderr
        == f"policy: {tmp_path.resolve() / 'policies'}: policy folder does not exist\n"
    )


# --- serve ----------------------------------------------------------------------------


def test_serve_refuses_invalid_config_with_the_same_messages(tmp_path: Path) -> None:
    config = write_invalid_config(tmp_path)
    check = run_cli("config", "check", str(config))
    result = run_cli("serve", "--config", str(config))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == check.stderr
    assert sorted(result.stderr.splitlines()) == sorted(
        f"{config}: {line}" for line in INVALID_LINES
    )


def test_serve_with_invalid_config_does_not_listen(tmp_path: Path) -> None:
    policy_folder(tmp_path)
    listen_port, admin_port = free_port(), free_port()
    config = write_config(
        tmp_path, listen_port=listen_port, admin_port=admin_port, extra={"colour": "red"}
    )
    result = run_cli("serve", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr == f"{config}: colour: unknown key\n"
    assert "callgate listening" not in result.stderr
    assert not port_is_open(listen_port)
    assert not port_is_open(admin_port)


@pytest.mark.parametrize(
    ("rego", "expected"),
    [
        (
            UNKNOWN_BUILTIN_REGO,
            "policy: gateway.rego:7: unknown function 'io.jwt.decode' "
            "(not a builtin of this engine)",
        ),
        (SYNTAX_ERROR_REGO, "gateway.rego:5:"),
    ],
    ids=["unsupported-builtin", "syntax-error"],
)
def test_serve_refuses_bad_policies(tmp_path: Path, rego: str, expected: str) -> None:
    policy_folder(tmp_path, rego)
    listen_port, admin_port = free_port(), free_port()
    config = write_config(tmp_path, listen_port=listen_port, admin_port=admin_port)
    result = run_cli("serve", "--config", str(config))
    assert result.returncode == 2
    assert expected in result.stderr
    assert "callgate listening" not in result.stderr
    assert not port_is_open(listen_port)
    assert not port_is_open(admin_port)
    # The refusal is in the audit log too.
    db = sqlite3.connect(tmp_path / "callgate-data" / "audit.db")
    records = [json.loads(text) for (text,) in db.execute("SELECT record FROM audit_log")]
    db.close()
    assert [r["kind"] for r in records] == ["gateway_started", "policy_load_failed"]
    record = records[1]
    assert record["trigger"] == "start"
    assert any(expected.removeprefix("policy: ") in problem for problem in record["problems"])


def test_serve_with_opa_engine_names_the_missing_extra(tmp_path: Path) -> None:
    """A plain install has no OPA client: `engine: opa` then says which extra to install.
    The client is made absent the way a missing package is (`None` in sys.modules makes
    its import raise ModuleNotFoundError); the gateway runs as `python -m gateway`."""
    policy_folder(tmp_path)
    listen_port, admin_port = free_port(), free_port()
    config = write_config(
        tmp_path,
        listen_port=listen_port,
        admin_port=admin_port,
        extra={"policy": {"path": "./policies", "engine": "opa"}},
    )
    without_client = (
        "import runpy, sys; sys.modules['opa_client'] = None; "
        "runpy.run_module('gateway', run_name='__main__')"
    )
    result = subprocess.run(
        [sys.executable, "-c", without_client, "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=cli_env(),
    )
    assert result.returncode == 2
    assert result.stderr == (
        "policy: policy.engine: opa needs the OPA client, which is not installed: "
        "pip install 'callgate[opa]'\n"
    )
    assert not port_is_open(listen_port)
    assert not port_is_open(admin_port)


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def wait_until_healthy(proc: subprocess.Popen[str], admin_port: int) -> tuple[int, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"serve exited early with {proc.returncode}")
        try:
            return http_get(f"http://127.0.0.1:{admin_port}/healthz")
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    pytest.fail("serve did not answer /healthz within 20 s")


def test_serve_runs_answers_logs_and_stops_on_sigterm(tmp_path: Path) -> None:
    policies = policy_folder(tmp_path)
    listen_port, admin_port = free_port(), free_port()
    config = write_config(tmp_path, listen_port=listen_port, admin_port=admin_port)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        assert wait_until_healthy(proc, admin_port) == (200, {"status": "ok"})

        version = read_policy_dir(policies).policy_version
        assert re.fullmatch(r"[0-9a-f]{64}", version)
        assert http_get(f"http://127.0.0.1:{admin_port}/readyz") == (
            200,
            {"status": "ready", "policy_version": version, "policy_last_failure": None},
        )

        status, body = http_get(
            f"http://127.0.0.1:{listen_port}/tools/nope/x",
            {"Authorization": f"Bearer {AGENT_TOKEN}"},
        )
        assert status == 404
        assert body["error"]["code"] == "unknown_tool"
        assert body["error"]["retryable"] is False
        assert set(body["error"]) == {"code", "message", "request_id", "retryable"}

        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)

    assert proc.returncode == 0, stderr
    assert stdout == ""
    assert SECRET not in stderr
    entries = [json.loads(line) for line in stderr.splitlines()]  # every line is JSON
    by_msg = {entry["msg"]: entry for entry in entries}

    listening = by_msg["callgate listening"]
    assert listening["level"] == "info"
    assert listening["agent_listener"] == f"http://127.0.0.1:{listen_port}"
    assert listening["admin_listener"] == f"http://127.0.0.1:{admin_port}"
    assert listening["policy_version"] == version
    assert listening["tools"] == ["echo"]

    access = [e for e in entries if e["logger"] == "callgate.access"]
    assert len(access) == 1
    assert access[0]["request_id"] == body["error"]["request_id"]
    assert access[0]["agent"] == "bot"
    assert access[0]["tool"] == "-"
    assert access[0]["method"] == "GET"
    assert access[0]["outcome"] == "unknown_tool"
    assert access[0]["status"] == 404

    assert entries[-1]["msg"] == "callgate stopped"
    assert not port_is_open(listen_port)
    assert not port_is_open(admin_port)


# --- policy test ----------------------------------------------------------------------


def test_policy_test_on_repo_policies() -> None:
    """The default policy's tests and the examples' (policies/examples/*) all run."""
    names = re.findall(
        r"^(test_\w+) if\b", (DEFAULT_POLICIES / "gateway_test.rego").read_text(), re.M
    )
    assert names, "the repo's policies have tests"
    every_test = [
        name
        for path in DEFAULT_POLICIES.rglob("*_test.rego")
        for name in re.findall(r"^(test_\w+)\b", path.read_text(), re.M)
    ]
    result = run_cli("policy", "test", str(DEFAULT_POLICIES))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == f"{len(every_test)} passed, 0 failed"
    for name in names:
        assert f"PASS  data.gateway_test.{name} (gateway_test.rego)" in lines


def test_policy_test_defaults_to_policies_folder_of_cwd() -> None:
    result = run_cli("policy", "test", cwd=DEFAULT_POLICIES.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].endswith(" passed, 0 failed")


def test_policy_test_failing_rule(tmp_path: Path) -> None:
    folder = policy_folder(tmp_path)
    (folder / "gateway_test.rego").write_text(
        "package gateway_test\n\nimport rego.v1\n\nimport data.gateway\n\n"
        'test_caller_allowed if gateway.decision.allow with input as {"agent": {"roles": '
        '["caller"]}}\n\n'
        "test_nobody_allowed if {\n"
        '    d := gateway.decision with input as {"agent": {"roles": []}}\n'
        '    print("reason:", d.reason)\n'
        "    d.allow\n"
        '    d.reason == "caller"\n'
        "}\n"
    )
    result = run_cli("policy", "test", str(folder))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "PASS  data.gateway_test.test_caller_allowed (gateway_test.rego)",
        "FAIL  data.gateway_test.test_nobody_allowed (gateway_test.rego): evaluated to undefined",
        "      failed at gateway_test.rego:12: d.allow",
        "      print: gateway_test.rego:11: reason: agent lacks the caller role",
        "1 passed, 1 failed",
    ]


def test_policy_test_without_tests_fails(tmp_path: Path) -> None:
    result = run_cli("policy", "test", str(policy_folder(tmp_path)))
    assert result.returncode == 1
    assert result.stdout == "0 passed, 0 failed\n"


def test_policy_test_refuses_a_test_defined_twice(tmp_path: Path) -> None:
    # The engine would evaluate both definitions as one rule: the failing one hidden.
    folder = policy_folder(tmp_path)
    (folder / "gateway_test.rego").write_text(
        "package gateway_test\n\nimport rego.v1\n\n"
        "test_decision if true\n\ntest_decision if false\n"
    )
    result = run_cli("policy", "test", str(folder))
    assert result.returncode == 2
    assert result.stderr == (
        "policy: gateway_test.rego:7: data.gateway_test.test_decision is defined again "
        "(first at gateway_test.rego:5): give each test its own name, or it passes when "
        "either one passes\n"
    )


def test_policy_test_on_broken_policy(tmp_path: Path) -> None:
    folder = policy_folder(tmp_path, UNKNOWN_BUILTIN_REGO)
    result = run_cli("policy", "test", str(folder))
    assert result.returncode == 2
    assert result.stderr == (
        "policy: gateway.rego:7: unknown function 'io.jwt.decode' (not a builtin of this engine)\n"
    )
