"""decide over real HTTP: deny, fail closed on engine errors and panics, never forward."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.policy.embedded import EmbeddedEngine
from gateway.serve import build_apps
from gateway.services import SERVICES
from tests.support.gateway import auth, make_config, start_path_recorder

HEADER = "package gateway\n\nimport rego.v1\n\n"


def policy_folder(tmp_path: Path, rego: str) -> Path:
    folder = tmp_path / "decide-policies"
    folder.mkdir()
    (folder / "gateway.rego").write_text(HEADER + rego)
    return folder


@pytest.fixture
async def upstream(start_upstream):
    return await start_path_recorder(start_upstream)


@pytest.mark.parametrize(
    ("rego", "status", "code", "message"),
    [
        (
            'decision := {"allow": false, "reason": "refunds over 1000 EUR need finance"}\n',
            403,
            "policy_denied",
            "refunds over 1000 EUR need finance",
        ),
        ('decision := {"allow": "true"}\n', 403, "policy_denied", "allow must be a boolean"),
        ('decision := {"allow": 1}\n', 403, "policy_denied", "allow must be a boolean"),
        (
            'decision := {"reason": "forgot allow"}\n',
            403,
            "policy_denied",
            "allow must be a boolean",
        ),
        ('decision := ["allow"]\n', 403, "policy_denied", "must be an object"),
        ('decision := {"allow": true} if input.never\n', 403, "policy_denied", "undefined"),
        (
            'decision := {"allow": 1 / count(input.request.query) == 1}\n',
            503,
            "policy_unavailable",
            "could not decide",
        ),
        (
            'decision := {"allow": true, "reason": concat("", [input.request.size])}\n',
            503,
            "policy_unavailable",
            "could not decide",
        ),
    ],
    ids=[
        "deny-with-reason",
        "allow-string",
        "allow-number",
        "allow-missing",
        "not-an-object",
        "undefined",
        "divide-by-zero",
        "builtin-type-error",
    ],
)
async def test_only_allow_true_forwards(
    tmp_path, upstream, start_gateway, rego, status, code, message
):
    url, calls = upstream
    gw = await start_gateway(url, policy_dir=policy_folder(tmp_path, rego))
    resp = await gw.get("/tools/echo/refunds", headers=auth())
    body = await resp.json()
    assert resp.status == status
    assert body["error"]["code"] == code
    assert message in body["error"]["message"]
    assert body["error"]["request_id"] == resp.headers["X-Request-Id"]
    assert calls == [], "nothing may be forwarded"


async def test_allow_true_forwards(tmp_path, upstream, start_gateway):
    url, calls = upstream
    gw = await start_gateway(
        url, policy_dir=policy_folder(tmp_path, 'decision := {"allow": true}\n')
    )
    resp = await gw.get("/tools/echo/refunds", headers=auth())
    assert resp.status == 200
    assert calls == ["/refunds"]


async def test_rust_panic_in_the_engine_fails_closed_over_http(tmp_path, upstream):
    """Swap in a regorus Engine built on another thread: it then panics (a real Rust
    panic, pyo3's PanicException) on every decision made on the loop thread."""
    url, calls = upstream
    folder = policy_folder(tmp_path, 'decision := {"allow": true}\n')
    config = make_config(tmp_path, url, policy_dir=folder)
    loop = asyncio.get_running_loop()
    other_thread = ThreadPoolExecutor(max_workers=1)
    agent_app, _admin_app = build_apps(config)
    client = TestClient(TestServer(agent_app, host="127.0.0.1"))
    await client.start_server()
    engine = agent_app[SERVICES].policies.engine
    assert isinstance(engine, EmbeddedEngine)

    def foreign_engine() -> object:
        built = EmbeddedEngine()
        built.load(folder)
        return built._engine

    engine._engine = await loop.run_in_executor(other_thread, foreign_engine)

    def drop_engine() -> None:  # a regorus Engine may only be freed on its own thread too
        engine._engine = None

    try:
        for _ in range(2):  # and it keeps failing closed, call after call
            resp = await client.get("/tools/echo/x", headers=auth())
            body = await resp.json()
            assert resp.status == 503
            assert body["error"]["code"] == "policy_unavailable"
            assert body["error"]["retryable"] is True
    finally:
        # Freed on its own thread before closing, which would free it on this one.
        await loop.run_in_executor(other_thread, drop_engine)
        await client.close()
        other_thread.shutdown()
    assert calls == []
