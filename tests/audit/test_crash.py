"""The audit log under faults, with the gateway as a real `callgate serve` process:
killed with SIGKILL under load, and starved of disk space (RLIMIT_FSIZE)."""

from __future__ import annotations

import asyncio
import json
import resource
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.audit import read_records
from tests.support.gateway import auth
from tests.support.process import Gateway, cli

LOAD_CLIENTS = 20
LOAD_SECONDS = 1.5


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
                attempt = 0
                while (await call(f"after/{attempt}"))[0] != 200:  # distinct: no loop breaker
                    attempt += 1
                    await asyncio.sleep(0.1)
            assert len(reached) == reached_during + 1  # nothing reached the tool meanwhile
    finally:
        assert await gateway.stop() == 0
    records = read_records(gateway.audit_file)
    failed = [r for r in records if r["kind"] == "audit_store_failed"]
    assert len(failed) == 1
    refused = [r for r in records if r.get("code") == "audit_unavailable"]
    assert refused and all(
        r["path"] == "/during" or r["path"].startswith("/after") for r in refused
    )
    code, out = await cli("audit", "verify", "--config", str(gateway.config))
    assert code == 0 and out.startswith("ok "), out
    assert json.loads(json.dumps(failed[0]))["error"]
