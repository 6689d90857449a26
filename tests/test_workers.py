"""`callgate serve --workers N` (docs/deployment.md, "Running many replicas"): N gateway
processes on the same ports, their metrics summed on the admin port, a worker that dies
started again, and only on what several processes can share (PostgreSQL and Redis)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support.gateway import AGENT_TOKEN, ALLOW_ALL_REGO, auth, sha
from tests.support.process import Gateway, cli
from tests.support.servers import postgres_schema, require_redis, unique_name


def _config(tmp_path: Path, extra: dict[str, Any]) -> Path:
    import yaml

    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "gateway.rego").write_text(ALLOW_ALL_REGO)
    path = tmp_path / "callgate.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "policy": {"path": "policies"},
                "agents": [{"id": "bot", "token_sha256": sha(AGENT_TOKEN), "roles": ["caller"]}],
                "tools": [{"name": "echo", "upstream": "http://127.0.0.1:9"}],
                **extra,
            }
        )
    )
    return path


async def test_several_processes_are_refused_on_what_one_process_owns(tmp_path: Path) -> None:
    config = _config(tmp_path, {})
    status, out = await cli("serve", "--config", str(config), "--workers", "2")
    assert status == 2
    for key in ("limits.storage", "storage.url", "audit.url"):
        assert key in out
    status, out = await cli("config", "check", str(config), "--processes", "3")
    assert status == 2 and "memory limits count in each process apart" in out
    status, out = await cli("config", "check", str(config))
    assert status == 0, out


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.update(int(child) for child in text)
    return found


async def _until(check: Any, timeout_s: float = 20) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.1)


def _requests_total(text: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("callgate_requests_total{")
    )


@pytest.fixture
async def shared(tmp_path: Path) -> Any:
    """A PostgreSQL schema of this test's own, upgraded, and a Redis key prefix."""
    redis = require_redis()
    async with postgres_schema("workers") as url:
        yield {
            "storage": {"url": url},
            "audit": {"url": url},
            # The same call 40 times: the loop breaker would rightly stop it.
            "limits": {"storage": redis, "key_prefix": unique_name("workers") + ":", "loop": None},
        }


async def test_two_workers_serve_one_port_and_one_metrics(
    tmp_path: Path, start_upstream: Any, shared: dict[str, Any]
) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    upstream = await start_upstream(app)
    gateway = Gateway(tmp_path, upstream, extra=shared)
    status, out = await cli("db", "upgrade", "--config", str(gateway.config))
    assert status == 0, out
    await gateway.start("--workers", "2")
    assert gateway.proc is not None
    try:
        await _until(lambda: len(_children(gateway.proc.pid)) == 2)
        first = _children(gateway.proc.pid)
        async with aiohttp.ClientSession() as session:
            for _ in range(30):
                async with session.get(f"{gateway.url}/tools/echo/x", headers=auth()) as resp:
                    assert resp.status == 200
            # Whichever worker answers /metrics, it counts the calls of both.
            for _ in range(4):
                async with session.get(f"http://127.0.0.1:{gateway.admin_port}/metrics") as r:
                    text = await r.text()
                    assert _requests_total(text) == 30
                    # The pending actions are the store's: once, whichever worker reads it.
                    assert text.count('callgate_pending_actions{tool="echo"} 0.0') == 1

            # A worker that dies is started again; the group keeps serving meanwhile.
            victim = sorted(first)[0]
            os.kill(victim, signal.SIGKILL)
            await _until(lambda: len(_children(gateway.proc.pid) - {victim}) == 2)
            assert victim not in _children(gateway.proc.pid)
            for _ in range(10):
                async with session.get(f"{gateway.url}/tools/echo/x", headers=auth()) as resp:
                    assert resp.status == 200
    finally:
        status = await gateway.stop()
    assert status == 0
    assert not re.search(r'"level": "error".*unexpected', gateway.log.read_text())
