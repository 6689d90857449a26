"""Limits on Redis across two real gateway processes (docs/limits.md, "Limits on Redis"):
exact limits and session budgets under concurrent load, a loop broken across them, stuck
sessions listed by both, and a Redis outage with `limits.on_error` and `/readyz`, recovered
without restart.

Each gateway has its own store and audit files (its own folder); they share only Redis
and the key prefix.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.approvals import APPROVER_CONFIG, approver_headers
from tests.support.gateway import auth, recording_upstream
from tests.support.process import Gateway
from tests.support.servers import RedisServer, delete_redis_keys, require_redis, unique_name

StartGateways = Callable[..., Awaitable[list[Gateway]]]


@pytest.fixture
async def upstream(start_upstream: Any) -> tuple[str, list[str]]:
    app, calls = recording_upstream()
    return await start_upstream(app), calls


@pytest.fixture
async def start_gateways(tmp_path: Path, upstream: tuple[str, list[str]]) -> AsyncIterator[Any]:
    """start_gateways(limits_a, limits_b, ...) -> one started `python -m gateway serve` per
    `limits` section, each in its own folder; all stopped after the test."""
    started: list[Gateway] = []

    async def start(*limits: dict[str, Any]) -> list[Gateway]:
        gateways = []
        for i, section in enumerate(limits):
            folder = tmp_path / f"gateway-{len(started) + i}"
            folder.mkdir()
            gateways.append(
                Gateway(folder, upstream[0], extra={"limits": section, **APPROVER_CONFIG})
            )
        started.extend(gateways)
        await asyncio.gather(*(gateway.start() for gateway in gateways))
        return gateways

    yield start
    await asyncio.gather(*(gateway.stop() for gateway in started if gateway.proc is not None))


@pytest.fixture
async def on_redis() -> AsyncIterator[Callable[..., dict[str, Any]]]:
    """on_redis(**limits) -> a `limits` section on the test Redis, under a key prefix of
    this test's own (its keys deleted after the test); no loop breaker nor budget unless
    given."""
    url, prefix = require_redis(), unique_name("callgate") + ":"
    yield lambda **limits: {
        "storage": url,
        "key_prefix": prefix,
        "loop": None,
        "session_budget": None,
        **limits,
    }
    await delete_redis_keys(url, prefix)


async def test_two_processes_admit_exactly_the_limit_in_total(
    start_gateways: StartGateways, upstream: tuple[str, list[str]], on_redis: Any
) -> None:
    limit = 20
    section = on_redis(per_agent={"limit": limit, "window_s": 60})
    a, b = await start_gateways(section, section)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def call(gateway: Gateway, i: int) -> int:
            async with session.get(f"{gateway.url}/tools/echo/{i}", headers=auth()) as resp:
                return resp.status

        statuses = await asyncio.gather(
            *(call(gateway, i) for i in range(100) for gateway in (a, b))
        )
    assert sorted(set(statuses)) == [200, 429]
    assert statuses.count(200) == limit, (statuses[0::2].count(200), statuses[1::2].count(200))
    assert len(upstream[1]) == limit


async def test_a_session_budget_admits_exactly_its_calls_over_two_processes(
    start_gateways: StartGateways, upstream: tuple[str, list[str]], on_redis: Any
) -> None:
    budget = 15
    section = on_redis(session_budget={"max_calls": budget, "window_s": 3600})
    a, b = await start_gateways(section, section)
    headers = {**auth(), "X-Agent-Session": "s-fleet"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def call(gateway: Gateway, i: int) -> tuple[int, str | None]:
            async with session.get(f"{gateway.url}/tools/echo/{i}", headers=headers) as resp:
                body = await resp.json() if resp.status != 200 else None
                return resp.status, body and body["error"]["code"]

        answers = await asyncio.gather(*(call(gateway, i) for i in range(30) for gateway in (a, b)))
    passed = [answer for answer in answers if answer == (200, None)]
    assert len(passed) == budget, (
        answers[0::2].count((200, None)),
        answers[1::2].count((200, None)),
    )
    assert set(answers) == {(200, None), (429, "budget_exhausted")}
    assert len(upstream[1]) == budget


async def test_a_session_stuck_on_one_process_is_listed_by_both(
    start_gateways: StartGateways, on_redis: Any
) -> None:
    section = on_redis(session_budget={"max_calls": 2})
    a, b = await start_gateways(section, section)
    async with aiohttp.ClientSession() as session:

        async def put(gateway: Gateway, session_name: str, body: bytes = b"same") -> Any:
            headers = {**auth(), "X-Agent-Session": session_name}
            async with session.put(
                f"{gateway.url}/tools/echo/retry", headers=headers, data=body
            ) as resp:
                return resp.status, (await resp.json()) if resp.status != 200 else None

        # One call through each, then the budget of 2 is spent for both.
        assert await put(a, "s-budget") == (200, None)
        assert await put(b, "s-budget") == (200, None)
        status, body = await put(a, "s-budget")
        assert (status, body["error"]["code"]) == (429, "budget_exhausted")

        async def stuck(gateway: Gateway) -> list[tuple[str, str, int]]:
            async with session.get(
                f"http://127.0.0.1:{gateway.admin_port}/api/v1/sessions?state=stuck",
                headers=approver_headers("bob"),
            ) as resp:
                assert resp.status == 200
                sessions = (await resp.json())["sessions"]
            return [(s["session"], s["reason"], s["refusals"]) for s in sessions]

        assert await stuck(b) == [("s-budget", "budget_exhausted", 1)]
        assert await stuck(a) == [("s-budget", "budget_exhausted", 1)]
        async with session.get(f"http://127.0.0.1:{b.admin_port}/metrics") as resp:
            assert "callgate_sessions_stuck 1.0" in await resp.text()


async def test_a_loop_is_broken_across_processes(
    start_gateways: StartGateways, on_redis: Any
) -> None:
    section = on_redis(loop={"max_repeats": 3, "window_s": 60})
    a, b = await start_gateways(section, section)
    headers = {**auth(), "X-Agent-Session": "s-loop"}
    async with aiohttp.ClientSession() as session:

        async def put(gateway: Gateway) -> tuple[int, str | None]:
            async with session.put(
                f"{gateway.url}/tools/echo/retry", headers=headers, data=b"same"
            ) as resp:
                body = await resp.json() if resp.status != 200 else None
                return resp.status, body and body["error"]["code"]

        assert [await put(gateway) for gateway in (a, b, a)] == [(200, None)] * 3
        assert await put(b) == (429, "loop_detected")
        assert await put(a) == (429, "loop_detected")
        async with session.get(
            f"http://127.0.0.1:{a.admin_port}/api/v1/sessions?state=stuck",
            headers=approver_headers("bob"),
        ) as resp:
            (entry,) = (await resp.json())["sessions"]
    assert (entry["session"], entry["reason"], entry["refusals"]) == ("s-loop", "loop_detected", 2)


REDIS_PASSWORD = "zz-limits-redis-password-zz"


async def test_a_redis_outage_honours_on_error_and_readiness_then_recovers(
    start_gateways: StartGateways, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = RedisServer(password=REDIS_PASSWORD)
    await server.start()
    try:
        monkeypatch.setenv("CALLGATE_TEST_LIMITS_REDIS_PASSWORD", REDIS_PASSWORD)
        url = f"redis://:${{CALLGATE_TEST_LIMITS_REDIS_PASSWORD}}@127.0.0.1:{server.port}/0"
        limits = {
            "storage": url,
            "loop": None,
            "session_budget": None,
            "per_agent": {"limit": 1000, "window_s": 60},
        }
        deny, allow = await start_gateways(limits, {**limits, "on_error": "allow"})
        await outage(server, deny, allow)
    finally:
        await server.kill()
    for gateway in (deny, allow):
        log = gateway.log.read_text(errors="replace")
        assert "rate limiter failed" in log  # the outage was logged, without the password
        assert REDIS_PASSWORD not in log


async def outage(server: RedisServer, deny: Gateway, allow: Gateway) -> None:
    async with aiohttp.ClientSession() as session:

        async def call(gateway: Gateway) -> tuple[int, str | None]:
            async with session.get(f"{gateway.url}/tools/echo/x", headers=auth()) as resp:
                body = await resp.json() if resp.status != 200 else None
                return resp.status, body and body["error"]["code"]

        async def ready(gateway: Gateway) -> tuple[int, Any]:
            async with session.get(f"http://127.0.0.1:{gateway.admin_port}/readyz") as resp:
                return resp.status, await resp.json()

        assert await call(deny) == (200, None)
        assert await call(allow) == (200, None)
        await server.kill()
        for _ in range(2):  # the pooled connection dies, then no new one can be made
            began = time.monotonic()
            assert await call(deny) == (429, "rate_limited")
            assert await call(allow) == (200, None)
            assert time.monotonic() - began < 2  # refused at once, not held
        for gateway in (deny, allow):
            status, body = await ready(gateway)
            assert status == 503
            assert (
                body["limits"] == f"Redis at redis://***@127.0.0.1:{server.port}/0 does not answer"
            )
            assert REDIS_PASSWORD not in str(body)
        async with session.get(
            f"http://127.0.0.1:{deny.admin_port}/api/v1/sessions?state=stuck",
            headers=approver_headers("bob"),
        ) as resp:
            error = (await resp.json())["error"]
        assert (resp.status, error["code"], error["retryable"]) == (500, "internal_error", True)
        assert f"from Redis at redis://***@127.0.0.1:{server.port}/0;" in error["message"]

        await server.start()  # on the same port, empty: nothing restarts the gateways
        assert [(await ready(gateway))[0] for gateway in (deny, allow)] == [200, 200]
        async with asyncio.timeout(3):  # the limiter tries Redis again a second after it failed
            while await call(deny) != (200, None):
                await asyncio.sleep(0.1)
        assert await call(allow) == (200, None)


async def test_a_hung_redis_refuses_waiting_calls_at_once(start_gateways: StartGateways) -> None:
    """A Redis that accepts and never answers costs one call its timeouts; the calls
    waiting behind it are refused at once, not each after the same timeouts."""
    server = RedisServer()
    await server.start()
    try:
        limits = {"storage": server.url, "per_agent": {"limit": 1000, "window_s": 60}}
        (gateway,) = await start_gateways(limits)
        async with aiohttp.ClientSession() as session:

            async def call() -> int:
                async with session.get(f"{gateway.url}/tools/echo/x", headers=auth()) as resp:
                    return resp.status

            assert await call() == 200
            server.pause()
            began = time.monotonic()
            assert await asyncio.gather(*(call() for _ in range(10))) == [429] * 10
            assert time.monotonic() - began < 3  # one call's timeouts (2 x 0.5 s) and a margin
            async with session.get(f"http://127.0.0.1:{gateway.admin_port}/readyz") as resp:
                assert resp.status == 503
            server.resume()
            async with asyncio.timeout(5):
                while await call() != 200:
                    await asyncio.sleep(0.2)
    finally:
        server.resume()
        await server.kill()
