"""The audit log under faults, with the gateway as a real `callgate serve` process:
killed with SIGKILL under load, and starved of disk space (RLIMIT_FSIZE)."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from tests.audit.helpers import read_records
from tests.conftest import AGENT_TOKEN, ALLOW_ALL_REGO, auth, sha

LOAD_CLIENTS = 20
LOAD_SECONDS = 1.5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Gateway:
    """`python -m gateway serve` on fresh ports, with the allow-all policy."""

    def __init__(self, tmp_path: Path, upstream: str) -> None:
        self.port, self.admin_port = free_port(), free_port()
        policies = tmp_path / "policies"
        policies.mkdir(exist_ok=True)
        (policies / "gateway.rego").write_text(ALLOW_ALL_REGO)
        self.config = tmp_path / "callgate.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "listen": {"port": self.port},
                    "admin": {"port": self.admin_port},
                    "policy": {"path": "policies"},
                    "agents": [
                        {"id": "bot", "token_sha256": sha(AGENT_TOKEN), "roles": ["caller"]}
                    ],
                    "tools": [{"name": "echo", "upstream": upstream, "timeout_s": 5}],
                }
            )
        )
        self.audit_file = tmp_path / "callgate-data" / "audit.db"
        self.log = tmp_path / "gateway.log"
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, *, log_to_file: bool = True) -> None:
        output = self.log.open("ab") if log_to_file else None
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--config",
            str(self.config),
            stdout=output or asyncio.subprocess.DEVNULL,
            stderr=output or asyncio.subprocess.DEVNULL,
            env={**os.environ, "RUST_LIB_BACKTRACE": "0"},
        )
        if output:
            output.close()
        async with aiohttp.ClientSession() as session, asyncio.timeout(20):
            while True:
                assert self.proc.returncode is None, self.log.read_text(errors="replace")
                try:
                    async with session.get(f"http://127.0.0.1:{self.admin_port}/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        async with asyncio.timeout(20):
            return await self.proc.wait()


async def cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(60):
        out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@pytest.fixture
async def slow_upstream(start_upstream: Any) -> tuple[str, list[str]]:
    """An upstream that notes each call's X-Request-Id and takes 20 ms to answer, so
    that a kill lands while calls are in flight."""
    reached: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        reached.append(request.headers["X-Request-Id"])
        await request.read()
        await asyncio.sleep(0.02)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return await start_upstream(app), reached


async def load(url: str, stop: asyncio.Event) -> int:
    """Calls from LOAD_CLIENTS clients until `stop`; errors (the gateway dies) end a client."""
    answered = 0

    async def client(n: int) -> None:
        nonlocal answered
        async with aiohttp.ClientSession() as session:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    async with session.post(
                        f"{url}/tools/echo/c{n}/{i}", headers=auth(), json={"i": i}
                    ) as resp:
                        await resp.read()
                        answered += 1
                except aiohttp.ClientError:
                    return

    async with asyncio.timeout(30):
        await asyncio.gather(*(client(n) for n in range(LOAD_CLIENTS)))
    return answered


async def test_kill_9_under_load_loses_no_intent_and_reports_incomplete_calls(
    tmp_path: Path, slow_upstream: tuple[str, list[str]]
) -> None:
    upstream, reached = slow_upstream
    gateway = Gateway(tmp_path, upstream)
    await gateway.start()
    stop = asyncio.Event()
    traffic = asyncio.create_task(load(gateway.url, stop))
    await asyncio.sleep(LOAD_SECONDS)
    assert await gateway.stop(signal.SIGKILL) == -signal.SIGKILL
    stop.set()
    answered = await traffic
    assert answered > 0 and reached

    code, out = await cli("audit", "verify", "--config", str(gateway.config))
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("ok ")
    records = read_records(gateway.audit_file)
    intents = {r["request_id"] for r in records if r["kind"] == "intent"}
    outcomes = {r["request_id"] for r in records if r["kind"] == "outcome"}
    # Every call that reached the upstream had its intent committed first.
    assert set(reached) <= intents
    # Intents without outcomes are exactly the calls verify reports as incomplete.
    listed = {line.split(" request ")[1].split()[0] for line in lines[1:]}
    assert all(line.startswith("incomplete: ") for line in lines[1:])
    assert listed == intents - outcomes

    # A restarted gateway continues the chain, and verify still accepts it.
    await gateway.start()
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{gateway.url}/tools/echo/after", headers=auth()) as resp,
    ):
        assert resp.status == 200
    assert await gateway.stop() == 0
    code, out = await cli("audit", "verify", "--config", str(gateway.config))
    assert code == 0, out
    after = read_records(gateway.audit_file)
    assert len(after) == len(records) + 6  # started, policy, 3 call records, stopped
    assert out.splitlines()[0] == f"ok {len(after)} records, head {head_of(gateway.audit_file)}"


def head_of(path: Path) -> str:
    import sqlite3

    db = sqlite3.connect(path)
    try:
        return str(db.execute("SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()[0])
    finally:
        db.close()


@pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs Linux prlimit")
async def test_a_full_disk_stops_forwarding_and_the_gateway_recovers_when_space_returns(
    tmp_path: Path, slow_upstream: tuple[str, list[str]]
) -> None:
    upstream, reached = slow_upstream
    gateway = Gateway(tmp_path, upstream)
    # Logs go nowhere: a log file would hit the same size limit.
    await gateway.start(log_to_file=False)
    assert gateway.proc is not None
    pid = gateway.proc.pid
    try:
        async with aiohttp.ClientSession() as session:

            async def call(path: str) -> tuple[int, Any]:
                async with session.get(f"{gateway.url}/tools/echo/{path}", headers=auth()) as r:
                    return r.status, await r.json()

            assert (await call("before"))[0] == 200
            # No file of the gateway may grow past 1 byte now: every SQLite write fails.
            _soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, hard))
            status, body = await call("during")
            assert (status, body["error"]["code"]) == (503, "audit_unavailable")
            reached_during = len(reached)
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))
            async with asyncio.timeout(15):
                while (await call("after"))[0] != 200:
                    await asyncio.sleep(0.1)
            assert len(reached) == reached_during + 1  # nothing reached the tool meanwhile
    finally:
        assert await gateway.stop() == 0
    records = read_records(gateway.audit_file)
    failed = [r for r in records if r["kind"] == "audit_store_failed"]
    assert len(failed) == 1
    refused = [r for r in records if r.get("code") == "audit_unavailable"]
    assert refused and all(r["path"] in ("/during", "/after") for r in refused)
    code, out = await cli("audit", "verify", "--config", str(gateway.config))
    assert code == 0 and out.startswith("ok "), out
    assert json.loads(json.dumps(failed[0]))["error"]
