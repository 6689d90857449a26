"""A gateway under test: its config (one tool, two agents, an allow-all policy), the
agents' tokens, and a real upstream that records the paths it gets."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from gateway.config import Config, parse_config

REPO = Path(__file__).resolve().parents[2]
DEFAULT_POLICIES = REPO / "policies"

AGENT_TOKEN = "test-agent-token"
OTHER_TOKEN = "test-other-token"
TOOL_SECRET = "s3cr3t-tool-credential"

# A policy that allows every call from an agent with the "caller" role; the decision
# can be steered from the request (for tests of the decision contract).
ALLOW_ALL_REGO = """package gateway

import rego.v1

default decision := {"allow": false, "reason": "agent lacks the caller role"}

decision := {"allow": true, "reason": "caller"} if "caller" in input.agent.roles
"""


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# The store every config of make_config uses: None for the default (a SQLite file under the
# test's tmp_path), or a PostgreSQL URL that the `store_url` fixture (tests/conftest.py) sets
# for the duration of one test.
STORE: dict[str, str | None] = {"url": None}


def make_config(
    tmp_path: Path,
    upstream: str = "http://127.0.0.1:9",
    *,
    policy_dir: Path | None = None,
    tool: dict[str, Any] | None = None,
    extra_tools: list[dict[str, Any]] | None = None,
) -> Config:
    """A gateway config with one tool `echo` (upstream given) and agents `bot`/`other`, on
    the store of STORE."""
    if policy_dir is None:
        policy_dir = tmp_path / "policies"
        policy_dir.mkdir(exist_ok=True)
        (policy_dir / "gateway.rego").write_text(ALLOW_ALL_REGO)
    tools = [
        {
            "name": "echo",
            "upstream": upstream,
            "credentials": {"header": "Authorization", "value": f"Bearer {TOOL_SECRET}"},
            "timeout_s": 2,
            "max_body_bytes": 4 * 1024 * 1024,
            **(tool or {}),
        },
        *(extra_tools or []),
    ]
    tree = {
        "policy": {"path": str(policy_dir)},
        "agents": [
            {"id": "bot", "token_sha256": sha(AGENT_TOKEN), "roles": ["caller"]},
            {"id": "other", "token_sha256": sha(OTHER_TOKEN), "roles": []},
        ],
        "tools": tools,
    }
    if STORE["url"] is not None:
        tree["storage"] = {"url": STORE["url"]}
    return parse_config(yaml.safe_dump(tree), tmp_path)


def copy_default_policies(tmp_path: Path) -> Path:
    target = tmp_path / "default-policies"
    shutil.copytree(DEFAULT_POLICIES, target)
    return target


async def start_path_recorder(start_upstream: Any) -> tuple[str, list[str]]:
    """A real tool that answers every call 200 `{"ok": true}`: (its URL, the paths it got)."""
    paths: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        paths.append(request.path)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return await start_upstream(app), paths


def auth(token: str = AGENT_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def recording_upstream() -> tuple[web.Application, list[str]]:
    """A tool answering every call `ok`, and the targets (path and query) it got."""
    calls: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        calls.append(request.path_qs)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app, calls
