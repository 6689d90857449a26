"""Two real gateway processes on one PostgreSQL store (docs/deployment.md, "Running many
replicas"): approvals, executions (a replica killed mid-call included), Idempotency-Keys
and kill switches hold across them, and a decision or a switch taken on one wakes the other
within a second.

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
        self, *, execution_lease_s: float | None = None, **storage: Any
    ) -> tuple[Gateway, Gateway, Tool]: ...


# While a gateway hears the others' notices it still re-reads the store this often: far
# beyond a second, so only a notice can wake it within one.
SLOW_POLLS = {"listening_poll_s": 60}


@pytest.fixture
async def two_gateways(
    tmp_path: Path, start_upstream: Any, postgres_store_url: str
) -> AsyncIterator[StartTwo]:
    """start(**storage) -> two started gateways on the test's PostgreSQL store (`storage`
    adds to their `storage` settings), and the tool behind them; `execution_lease_s`
    shortens their `approvals.execution_lease_s`."""
    started: list[Gateway] = []

    async def start(
        *, execution_lease_s: float | None = None, **storage: Any
    ) -> tuple[Gateway, Gateway, Tool]:
        tool = Tool()
        upstream = await start_upstream(tool.app())
        extra: dict[str, Any] = {
            "storage": {"url": postgres_store_url, **storage},
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


async def test_parked_on_a_is_listed_and_approved_on_b_and_executes_once(
    two_gateways: StartTwo,
) -> None:
    # (A call held on A while B approves: test_while_listening_a_notice_wakes_a_held_call…)
    a, b, tool = await two_gateways()
    async with aiohttp.ClientSession() as session:
        action_id = await park(session, a)
        async with session.get(
            f"{admin(b)}/api/v1/actions?status=pending", headers=approver_headers("bob")
        ) as resp:
            listed = await resp.json()
        assert action_id in [action["id"] for action in listed["actions"]]
        assert await approve(session, b, action_id, "bob") == 200
        action = await state_becomes(session, admin(a), action_id, "succeeded", timeout_s=10)
    assert action["state"] == "succeeded"
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
        await engage_all(session, b, "incident 42")
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


async def store_notices(session: aiohttp.ClientSession, gateway: Gateway) -> str:
    async with session.get(f"{admin(gateway)}/readyz") as resp:
        return str((await resp.json())["store_notices"])


async def until_listening(session: aiohttp.ClientSession, *gateways: Gateway) -> None:
    async with asyncio.timeout(10):
        for gateway in gateways:
            while await store_notices(session, gateway) != "listening":
                await asyncio.sleep(0.05)


async def engage_all(session: aiohttp.ClientSession, gateway: Gateway, reason: str) -> None:
    """Engage the switch on every call, through `gateway`'s admin API."""
    async with session.put(
        f"{admin(gateway)}/api/v1/switches/all",
        headers=approver_headers("olga"),
        json={"reason": reason},
    ) as resp:
        assert resp.status in (200, 201)


async def refused_within(session: aiohttp.ClientSession, gateway: Gateway, since: float) -> float:
    """How long after `since` a call through `gateway` was first refused 403 (failing
    once a second has passed)."""
    while True:
        async with session.get(f"{gateway.url}/tools/echo/x", headers=auth()) as resp:
            await resp.read()
            if resp.status == 403:
                return time.monotonic() - since
        assert time.monotonic() - since < 1.0, "not refused within a second"
        await asyncio.sleep(0.02)


async def test_while_listening_a_notice_wakes_a_held_call_on_a_within_a_second(
    two_gateways: StartTwo,
) -> None:
    a, b, tool = await two_gateways(**SLOW_POLLS)
    async with aiohttp.ClientSession() as session:
        await until_listening(session, a, b)

        async def held() -> tuple[int, float]:
            async with session.post(
                f"{a.url}/tools/echo/refunds",
                headers={**auth(), "Prefer": "wait=10"},
                json={"eur": 5},
            ) as resp:
                await resp.read()
                return resp.status, time.monotonic()

        holding = asyncio.ensure_future(held())
        async with asyncio.timeout(5):
            pending: list[dict[str, Any]] = []
            while not pending:
                async with session.get(
                    f"{admin(b)}/api/v1/actions?status=pending", headers=approver_headers("bob")
                ) as resp:
                    pending = (await resp.json())["actions"]
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # A holds the call, re-reading its action after 60 s only
        assert await approve(session, b, pending[0]["id"], "bob") == 200
        approved_at = time.monotonic()
        status, answered_at = await holding
    assert status == 201  # the tool's answer, not the 202 of a call still pending
    assert answered_at - approved_at < 1.0
    assert len(tool.calls) == 1


async def test_while_listening_a_switch_engaged_or_lifted_on_b_holds_on_a_within_a_second(
    two_gateways: StartTwo,
) -> None:
    a, b, _tool = await two_gateways(**SLOW_POLLS)
    switch = f"{admin(b)}/api/v1/switches/all"
    async with aiohttp.ClientSession() as session:
        await until_listening(session, a, b)
        async with session.get(f"{a.url}/tools/echo/x", headers=auth()) as resp:
            assert resp.status == 201
        await engage_all(session, b, "incident 42")
        await refused_within(session, a, time.monotonic())  # A re-reads its switches every 60 s
        async with session.delete(switch, headers=approver_headers("olga")) as resp:
            assert resp.status == 200
        lifted_at = time.monotonic()
        while True:
            async with session.get(f"{a.url}/tools/echo/x", headers=auth()) as resp:
                if resp.status == 201:
                    break
            assert time.monotonic() - lifted_at < 1.0, "still refused a second after the lift"
            await asyncio.sleep(0.02)


async def test_when_the_listening_connection_drops_switches_still_hold_and_it_comes_back(
    two_gateways: StartTwo, postgres_store_url: str
) -> None:
    import asyncpg

    a, b, _tool = await two_gateways(**SLOW_POLLS)
    assert a.proc is not None
    async with aiohttp.ClientSession() as session:
        await until_listening(session, a, b)
        server = await asyncpg.connect(postgres_store_url.partition("?")[0])
        try:
            # The connection as an operator finds it: "callgate notices <pid> <channel>".
            killed = await server.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name LIKE $1",
                f"callgate notices {a.proc.pid} %",
            )
            assert [row[0] for row in killed] == [True]
            # It lets go of nothing: the switch engaged through B right away still holds
            # on A within a second, by A's fast polls or its listening again.
            await engage_all(session, b, "incident 43")
            await refused_within(session, a, time.monotonic())
            await until_listening(session, a)
            again = await server.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name LIKE $1",
                f"callgate notices {a.proc.pid} %",
            )
            assert len(again) == 1
        finally:
            await server.close()
    log = a.log.read_text()
    assert log.count("store notices: lost the listening connection") == 1
    assert log.count("store notices: listening again") == 1
