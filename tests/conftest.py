"""Shared fixtures: real aiohttp upstreams and a real gateway, all on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.config import Config, parse_config
from gateway.serve import build_apps
from gateway.services import SERVICES

os.environ.setdefault("RUST_LIB_BACKTRACE", "0")

REPO = Path(__file__).resolve().parent.parent
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


def make_config(
    tmp_path: Path,
    upstream: str = "http://127.0.0.1:9",
    *,
    policy_dir: Path | None = None,
    tool: dict[str, Any] | None = None,
    extra_tools: list[dict[str, Any]] | None = None,
) -> Config:
    """A gateway config with one tool `echo` (upstream given) and agents `bot`/`other`."""
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
    return parse_config(yaml.safe_dump(tree), tmp_path)


def copy_default_policies(tmp_path: Path) -> Path:
    target = tmp_path / "default-policies"
    shutil.copytree(DEFAULT_POLICIES, target)
    return target


@pytest.fixture
async def start_upstream() -> Any:
    """start_upstream(app) -> base URL of a real server running that app."""
    servers: list[TestServer] = []

    async def start(app: web.Application) -> str:
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start
    for server in servers:
        await server.close()


GatewayFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def start_gateway(tmp_path: Path) -> Any:
    """start_gateway(upstream_url, **make_config kwargs) -> TestClient on the agent listener.

    The client's `.admin` attribute is a TestClient on the admin listener.
    """
    clients: list[TestClient] = []

    async def start(
        upstream: str = "http://127.0.0.1:9", *, config: Config | None = None, **kw: Any
    ) -> TestClient:
        cfg = config or make_config(tmp_path, upstream, **kw)
        agent_app, admin_app = build_apps(cfg)
        client = TestClient(TestServer(agent_app, host="127.0.0.1"))
        admin = TestClient(TestServer(admin_app, host="127.0.0.1"))
        await client.start_server()
        await admin.start_server()
        client.admin = admin  # type: ignore[attr-defined]
        client.services = agent_app[SERVICES]  # type: ignore[attr-defined]
        clients.extend([admin, client])
        return client

    yield start
    for client in clients:
        await client.close()


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
