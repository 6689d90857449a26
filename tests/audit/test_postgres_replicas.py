"""Two real `callgate serve` processes writing one audit log on PostgreSQL under load (each
with its own SQLite store), one of them killed with SIGKILL mid-load and restarted: the log
is one intact chain and every call the upstream received has its intent record
(docs/deployment.md, "Running many replicas")."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp

from tests.support.audit import read_records, verify_file
from tests.support.gateway import auth
from tests.support.process import Gateway, cli

CLIENTS = 10


async def load(urls: list[str], stop: asyncio.Event) -> int:
    """Calls spread over `urls` until `stop`; a refused connection (a killed gateway)
    moves the client on to the next gateway."""
    answered = 0

    async def client(n: int) -> None:
        nonlocal answered
        async with aiohttp.ClientSession() as session:
            i = 0
            while not stop.is_set():
                i += 1
                url = urls[(n + i) % len(urls)]
                try:
                    async with session.post(
                        f"{url}/tools/echo/c{n}/{i}", headers=auth(), json={"i": i}
                    ) as resp:
                        await resp.read()
                        answered += 1
                except aiohttp.ClientError:
                    await asyncio.sleep(0.01)

    async with asyncio.timeout(60):
        await asyncio.gather(*(client(n) for n in range(CLIENTS)))
    return answered


async def test_two_gateways_one_killed_mid_load_leave_one_intact_chain(
    tmp_path: Path, postgres_audit_url: str, slow_upstream: tuple[str, list[str]]
) -> None:
    upstream, reached = slow_upstream
    gateways = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        gateways.append(Gateway(folder, upstream, extra={"audit": {"url": postgres_audit_url}}))
    for gateway in gateways:
        await gateway.start()
    a, b = gateways
    stop = asyncio.Event()
    traffic = asyncio.create_task(load([a.url, b.url], stop))
    try:
        await asyncio.sleep(1.5)
        assert await a.stop(signal.SIGKILL) == -signal.SIGKILL
        await asyncio.sleep(0.5)
        await a.start()
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        answered = await traffic
    for gateway in gateways:
        assert await gateway.stop() == 0
    assert answered > 100 and reached

    for gateway in gateways:  # either config names the same log
        code, out = await cli("audit", "verify", "--config", str(gateway.config))
        assert code == 0, out
        assert out.splitlines()[0].startswith("ok ")
    report = verify_file(postgres_audit_url)
    assert report.broken is None
    records = read_records(postgres_audit_url)
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert out.splitlines()[0] == f"ok {len(records)} records, head {report.head}"
    intents = {r["request_id"] for r in records if r["kind"] == "intent"}
    assert set(reached) <= intents
    kinds = [r["kind"] for r in records]
    # Both gateways wrote into the one chain: a, b, then a again after its restart.
    assert kinds.count("gateway_started") == 3
    assert kinds.count("gateway_stopped") == 2  # the killed one never wrote its own
