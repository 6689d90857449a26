"""Issue 14, finding 7: during an audit outage a call gets 503 `audit_unavailable` within
`audit.write_timeout_s`, and is never forwarded later; a call whose agent left before its
intent was durable is not forwarded either (see docs/security.md).

The gateway's own audit log is held by another connection: its SQLite file (`BEGIN
EXCLUSIVE`), as a long checkpoint, a backup or a second process would, or its PostgreSQL
table (`LOCK TABLE`), as another gateway hung in the middle of its commit would. Each test
runs against a real `callgate serve` process, where a handler runs on after its agent hung
up, and against the app in this process under aiohttp's test server, which cancels the
handler instead.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from gateway.config import Config
from tests.support.audit import (
    Source,
    audit_source,
    read_records,
    verify_file,
    wait_for_records,
    with_audit,
)
from tests.support.gateway import auth, make_config, start_path_recorder
from tests.support.process import Gateway

CALLS = 30


@dataclass
class Running:
    url: str
    readyz: str
    audit_file: Source
    reached: list[str]  # the paths that reached the tool


Start = Callable[[float], Awaitable[Running]]


@pytest.fixture(params=["serve", "test_server"])
async def start(
    request: pytest.FixtureRequest,
    audit_backend: Callable[[Config], Config],
    tmp_path: Path,
    start_upstream: Any,
    start_gateway: Any,
) -> AsyncIterator[Start]:
    """start(write_timeout_s) -> a gateway in front of an upstream that notes each path."""
    processes: list[Gateway] = []
    upstream, reached = await start_path_recorder(start_upstream)

    async def run(write_timeout_s: float) -> Running:
        config = with_audit(
            audit_backend(make_config(tmp_path, upstream)), write_timeout_s=write_timeout_s
        )
        if request.param == "serve":
            audit: dict[str, Any] = {"write_timeout_s": write_timeout_s}
            if config.audit.url.startswith("postgresql://"):
                audit["url"] = config.audit.url
            process = Gateway(tmp_path, upstream, extra={"audit": audit})
            processes.append(process)
            await process.start()
            readyz = f"http://127.0.0.1:{process.admin_port}/readyz"
            source = audit.get("url", process.audit_file)
            return Running(process.url, readyz, source, reached)
        gw = await start_gateway(config=config)
        url = str(gw.make_url("")).rstrip("/")
        readyz = str(gw.admin.make_url("/readyz"))
        return Running(url, readyz, audit_source(gw), reached)

    yield run
    for process in processes:
        assert await process.stop() == 0


@asynccontextmanager
async def locked(source: Source) -> AsyncIterator[None]:
    """Another connection holds the audit log's write lock: every commit waits, then fails
    (SQLite: after its busy timeout, 2 s; PostgreSQL: after audit.database_timeout_s, 5 s)."""
    if isinstance(source, Path):
        blocker = sqlite3.connect(source, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        return
    server, _, options = source.partition("?options=-csearch_path%3D")
    holder = await asyncpg.connect(server, server_settings={"search_path": options})
    try:
        async with holder.transaction():
            await holder.execute("LOCK TABLE audit_log IN EXCLUSIVE MODE")
            yield
    finally:
        await holder.close()


async def get(url: str, timeout_s: float = 10) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
        session.get(url, headers=auth()) as resp,
    ):
        return resp.status, await resp.json()


async def until_ready(gw: Running) -> None:
    async with asyncio.timeout(10):
        while (await get(gw.readyz))[0] != 200:
            await asyncio.sleep(0.02)


def assert_every_intent_closed(source: Source) -> None:
    report = verify_file(source)
    assert report.broken is None
    assert report.incomplete == []


async def test_calls_during_a_lock_get_503_by_the_deadline_and_never_reach_the_tool_later(
    start: Start,
) -> None:
    gw = await start(0.5)
    assert (await get(f"{gw.url}/tools/echo/before"))[0] == 200
    # Its outcome committed: the first commit the lock holds up is the calls' own.
    await wait_for_records(gw.audit_file, lambda rs: rs[-1]["kind"] == "outcome")

    async def call(n: int) -> tuple[int, str] | str:
        try:  # the agents give up after 3 s
            status, body = await get(f"{gw.url}/tools/echo/during/{n}", timeout_s=3)
        except TimeoutError:
            return "the agent timed out"
        return status, body["error"]["code"]

    # Released once every call was answered, before the store's own lock wait (2 s) ends:
    # the commit under way then succeeds, after its calls were refused.
    async with locked(gw.audit_file):
        answers = await asyncio.gather(*(call(n) for n in range(CALLS)))
    assert answers == [(503, "audit_unavailable")] * CALLS
    await until_ready(gw)
    assert (await get(f"{gw.url}/tools/echo/after"))[0] == 200
    await asyncio.sleep(0.3)  # a call still queued would be forwarded now
    assert gw.reached == ["/before", "/after"]

    records = await wait_for_records(
        gw.audit_file,
        lambda rs: any(r["kind"] == "outcome" and r["path"] == "/after" for r in rs),
    )
    # An intent that was committing when its call gave up is closed as not sent.
    assert_every_intent_closed(gw.audit_file)
    unsent = [r for r in records if r["kind"] == "outcome" and r["path"].startswith("/during/")]
    assert unsent
    for record in unsent:
        assert (record["sent"], record["status"], record["error"]) == (
            False,
            503,
            "audit_unavailable",
        )


async def test_a_call_whose_agent_left_before_its_intent_was_durable_is_not_forwarded(
    start: Start,
) -> None:
    gw = await start(5)
    assert (await get(f"{gw.url}/tools/echo/before"))[0] == 200

    async def call(n: int) -> None:
        try:
            status, _ = await get(f"{gw.url}/tools/echo/left/{n}", timeout_s=0.3)
        except TimeoutError:
            return
        raise AssertionError(f"answered {status} while the store was locked")

    # Released before the store's own lock wait (2 s) ends: the intents are then
    # committed, after their agents left.
    async with locked(gw.audit_file):
        await asyncio.gather(*(call(n) for n in range(CALLS)))
        await asyncio.sleep(0.5)

    def closed(records: list[dict[str, Any]]) -> set[str]:
        """The /left/ calls whose last record is written: outcome, or a refusal decision."""
        return {
            r["path"]
            for r in records
            if r["kind"] == "outcome" or (r["kind"] == "decision" and r.get("code"))
        }

    records = await wait_for_records(
        gw.audit_file, lambda rs: len(closed(rs) - {"/before"}) == CALLS
    )
    await asyncio.sleep(0.3)
    assert gw.reached == ["/before"]
    for record in records:
        if record["kind"] == "outcome" and record["path"].startswith("/left/"):
            assert (record["status"], record["error"]) == (499, "agent_disconnected")
    assert_every_intent_closed(gw.audit_file)
    assert read_records(gw.audit_file)
