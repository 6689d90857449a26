"""Two real gateway processes on one PostgreSQL store (docs/deployment.md, "Running many
replicas"): approvals, executions, Idempotency-Keys and kill switches hold across them.

Each process keeps its own SQLite audit file (its own folder); they share the store only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.approvals import APPROVAL_REGO, APPROVER_CONFIG, Tool, approver_headers
from tests.support.gateway import auth
from tests.support.process import Gateway

StartTwo = Callable[[], Awaitable[tuple[Gateway, Gateway, Tool]]]


@pytest.fixture
async def two_gateways(
    tmp_path: Path, start_upstream: Any, postgres_store_url: str
) -> AsyncIterator[StartTwo]:
    """start() -> two started gateways on the test's PostgreSQL store, and the tool
    behind them."""
    started: list[Gateway] = []

    async def start() -> tuple[Gateway, Gateway, Tool]:
        tool = Tool()
        upstream = await start_upstream(tool.app())
        extra = {
            "storage": {"url": postgres_store_url},
            "limits": {"loop": None},
            **APPROVER_CONFIG,
        }
        for name in ("a", "b"):
            folder = tmp_path / name
            folder.mkdir()
            started.append(Gateway(folder, upstream, rego=APPROVAL_REGO, extra=extra))
        await asyncio.gather(*(gateway.start() for gateway in started))
        return started[0], started[1], tool

    yield start
    await asyncio.gather(*(gateway.stop() for gateway in started if gateway.proc is not None))


def admin(gateway: Gateway) -> str:
    return f"http://127.0.0.1:{gateway.admin_port}"


async def park(session: aiohttp.ClientSession, gateway: Gateway) -> str:
    async with session.post(
        f"{gateway.url}/tools/echo/refunds", headers=auth(), json={"eur": 5}
    ) as resp:
        assert resp.status == 202
        return str((await resp.json())["action_id"])


async def approve(
    session: aiohttp.ClientSession, gateway: Gateway, action_id: str, who: str
) -> int:
    async with session.post(
        f"{admin(gateway)}/api/v1/actions/{action_id}/approve",
        headers=approver_headers(who),
        json={},
    ) as resp:
        return resp.status


async def test_parked_on_a_is_listed_and_approved_on_b_and_a_held_call_wakes(
    two_gateways: StartTwo,
) -> None:
    a, b, tool = await two_gateways()
    async with aiohttp.ClientSession() as session:
        action_id = await park(session, a)
        async with session.get(
            f"{admin(b)}/api/v1/actions?status=pending", headers=approver_headers("bob")
        ) as resp:
            listed = await resp.json()
        assert action_id in [action["id"] for action in listed["actions"]]

        async def held() -> tuple[int, float]:
            async with session.get(
                f"{a.url}/actions/{action_id}", headers={**auth(), "Prefer": "wait=10"}
            ) as resp:
                await resp.read()
                return resp.status, time.monotonic()

        holding = asyncio.ensure_future(held())
        await asyncio.sleep(0.5)
        assert await approve(session, b, action_id, "bob") == 200
        approved_at = time.monotonic()
        status, answered_at = await holding
    assert status == 200
    assert answered_at - approved_at < 1.0
    assert len(tool.calls) == 1


async def test_twenty_concurrent_approves_over_both_execute_once(two_gateways: StartTwo) -> None:
    a, b, tool = await two_gateways()
    async with aiohttp.ClientSession() as session:
        action_id = await park(session, a)
        statuses = await asyncio.gather(
            *(
                approve(session, (a, b)[i % 2], action_id, ("alice", "bob")[i % 2])
                for i in range(20)
            )
        )
        assert all(status < 500 for status in statuses), statuses
        assert statuses.count(200) >= 1
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            async with session.get(
                f"{admin(b)}/api/v1/actions/{action_id}", headers=approver_headers("bob")
            ) as resp:
                state = (await resp.json())["state"]
            if state == "succeeded":
                break
            await asyncio.sleep(0.1)
    assert state == "succeeded"
    await asyncio.sleep(0.5)
    assert len(tool.calls) == 1


async def test_fifty_calls_with_one_key_over_both_reach_the_tool_once(
    two_gateways: StartTwo,
) -> None:
    a, b, tool = await two_gateways()
    tool.delay_s = 0.3
    headers = {**auth(), "Idempotency-Key": "same-key"}

    async def call(session: aiohttp.ClientSession, gateway: Gateway) -> tuple[int, str | None]:
        async with session.get(f"{gateway.url}/tools/echo/charges", headers=headers) as resp:
            await resp.read()
            return resp.status, resp.headers.get("Idempotent-Replayed")

    async with aiohttp.ClientSession() as session:
        answers = await asyncio.gather(*(call(session, (a, b)[i % 2]) for i in range(50)))
    statuses = [status for status, _ in answers]
    assert all(status in (201, 409) for status in statuses), statuses
    assert sum(1 for status, replayed in answers if status == 201 and not replayed) == 1
    assert len(tool.calls) == 1


async def test_a_switch_engaged_on_b_refuses_on_a_within_a_second(
    two_gateways: StartTwo,
) -> None:
    a, b, _tool = await two_gateways()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{a.url}/tools/echo/x", headers=auth()) as resp:
            assert resp.status == 201
        async with session.put(
            f"{admin(b)}/api/v1/switches/all",
            headers=approver_headers("olga"),
            json={"reason": "incident 42"},
        ) as resp:
            assert resp.status in (200, 201)
        engaged_at = time.monotonic()
        while True:
            async with session.get(f"{a.url}/tools/echo/x", headers=auth()) as resp:
                if resp.status == 403:
                    break
            assert time.monotonic() - engaged_at < 1.5
            await asyncio.sleep(0.05)
