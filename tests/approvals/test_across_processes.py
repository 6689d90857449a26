"""Two real gateway processes on one PostgreSQL store (docs/deployment.md, "Running many
replicas"): approvals, executions (a replica killed mid-call included), Idempotency-Keys and kill
switches hold across them.

Each process keeps its own SQLite audit file (its own folder); they share the store only.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pytest

from tests.support.approvals import (
    APPROVAL_REGO,
    APPROVER_CONFIG,
    Tool,
    approver_headers,
    state_becomes,
)
from tests.support.gateway import auth
from tests.support.process import Gateway


class StartTwo(Protocol):
    async def __call__(
        self, *, execution_lease_s: float | None = None
    ) -> tuple[Gateway, Gateway, Tool]: ...


@pytest.fixture
async def two_gateways(
    tmp_path: Path, start_upstream: Any, postgres_store_url: str
) -> AsyncIterator[StartTwo]:
    """start() -> two started gateways on the test's PostgreSQL store, and the tool
    behind them; `execution_lease_s` shortens their `approvals.execution_lease_s`."""
    started: list[Gateway] = []

    async def start(*, execution_lease_s: float | None = None) -> tuple[Gateway, Gateway, Tool]:
        tool = Tool()
        upstream = await start_upstream(tool.app())
        extra: dict[str, Any] = {
            "storage": {"url": postgres_store_url},
            "limits": {"loop": None},
            **APPROVER_CONFIG,
        }
        if execution_lease_s is not None:
            extra["approvals"] = {"execution_lease_s": execution_lease_s}
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


async def test_a_replica_killed_mid_execution_leaves_the_action_to_the_other_as_outcome_unknown(
    two_gateways: StartTwo,
) -> None:
    """B, running all along, ends A's execution once A's lease runs out (it sweeps every
    second, not only at its own start-up), and nothing through B sends it again."""
    a, b, tool = await two_gateways(execution_lease_s=1)
    tool.delay_s = 3  # the kill lands while the tool works
    headers = {**auth(), "Idempotency-Key": "refund-77"}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{a.url}/tools/echo/refunds", headers=headers, json={"eur": 77}
        ) as resp:
            assert resp.status == 202
            action_id = str((await resp.json())["action_id"])
        approving = asyncio.ensure_future(approve(session, a, action_id, "alice"))
        async with asyncio.timeout(10):
            await tool.reached.wait()
        assert await a.stop(signal.SIGKILL) == -signal.SIGKILL
        with contextlib.suppress(aiohttp.ClientError):  # it died with A
            await approving

        # A renewed its 1 s lease while alive; B's sweep takes it at most a second or so
        # after it runs out. 8 s leaves room on a loaded machine.
        action = await state_becomes(session, admin(b), action_id, "outcome_unknown", 8)
        assert action["state"] == "outcome_unknown"

        assert await approve(session, b, action_id, "bob") == 409
        async with session.post(
            f"{admin(b)}/api/v1/actions/{action_id}/deny", headers=approver_headers("bob"), json={}
        ) as resp:
            assert resp.status == 409
        # The agent sending the call again with its key finds the same action: a 409 that
        # says not to retry (docs/approvals.md), not a new action.
        async with session.post(
            f"{b.url}/tools/echo/refunds", headers=headers, json={"eur": 77}
        ) as resp:
            assert resp.status == 409
            retried = (await resp.json())["error"]
        assert retried["code"] == "conflict" and retried["retryable"] is False
        await asyncio.sleep(1.5)  # a few of B's sweeps, time a wrong re-send would need
        action = await state_becomes(session, admin(b), action_id, "outcome_unknown", 1)
        assert action["state"] == "outcome_unknown"
    assert len(tool.calls) == 1
