"""Wake-ups between processes sharing a PostgreSQL store (docs/deployment.md, "Running many
replicas"), on the real PostgreSQL: each `Notices` here stands for one process, with its
own listening connection. The two-gateway tests are in tests/approvals/
test_across_processes.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.services import Services
from gateway.store.notices import SWITCHES, WAITER, Notices, channel_of
from gateway.store.waiters import Waiters
from tests.support.gateway import make_config
from tests.support.process import free_port
from tests.support.servers import postgres_schema

LISTENING_POLL_S = 30.0


@pytest.fixture
async def open_notices() -> AsyncIterator[Callable[[str], Notices]]:
    """open_notices(url) -> a started Notices on `url`, closed after the test."""
    opened: list[Notices] = []

    def open_(url: str) -> Notices:
        notices = Notices(url, connect_timeout_s=2, listening_poll_s=LISTENING_POLL_S)
        notices.start()
        opened.append(notices)
        return notices

    yield open_
    for notices in opened:
        await notices.close()


async def until_listening(*all_notices: Notices) -> None:
    async with asyncio.timeout(10):
        while not all(notices.listening for notices in all_notices):
            await asyncio.sleep(0.02)


async def test_a_notice_wakes_the_other_processes_on_its_schema_only(
    open_notices: Callable[[str], Notices],
) -> None:
    async with postgres_schema("notices") as url, postgres_schema("other") as other_url:
        sender, receiver = open_notices(url), open_notices(url)
        elsewhere, beside = open_notices(other_url), open_notices(other_url)
        heard: dict[str, list[str]] = {"sender": [], "receiver": [], "elsewhere": []}
        for name, notices in (("sender", sender), ("receiver", receiver), ("elsewhere", elsewhere)):
            notices.subscribe(WAITER, heard[name].append, lambda: None)
        await until_listening(sender, receiver, elsewhere, beside)
        assert sender.channel == receiver.channel != elsewhere.channel

        sender.send(WAITER + "action-1")
        sender.send(SWITCHES)  # no subscriber for it here: ignored
        async with asyncio.timeout(5):
            while not heard["receiver"]:
                await asyncio.sleep(0.02)
        # Notices arrive in the order they were sent: once this later one is heard on the
        # other schema, the first one would have been too.
        beside.send(WAITER + "later")
        async with asyncio.timeout(5):
            while not heard["elsewhere"]:
                await asyncio.sleep(0.02)
    assert heard["receiver"] == ["action-1"]
    assert heard["sender"] == []  # its own waiters were woken when it sent
    assert heard["elsewhere"] == ["later"]  # not the notice of another schema's store


async def test_a_held_waiter_waits_longer_while_listening_and_is_woken_by_another_process(
    open_notices: Callable[[str], Notices],
) -> None:
    async with postgres_schema("notices") as url:
        here, there = Waiters(open_notices(url)), Waiters(open_notices(url))
        assert here.notices is not None and there.notices is not None
        assert here.poll_s(0.5) == 0.5  # not listening yet: the fast interval
        await until_listening(here.notices, there.notices)
        assert here.poll_s(0.5) == LISTENING_POLL_S

        waiting = asyncio.ensure_future(here.wait("action-1", here.poll_s(0.5)))
        await asyncio.sleep(0.1)
        there.notify("action-1")
        async with asyncio.timeout(5):  # far less than the 30 s it would wait unwoken
            await waiting


def test_a_long_schema_name_still_makes_a_channel_postgresql_keeps_whole() -> None:
    assert channel_of("store_1") == "callgate.store_1"
    long = channel_of("s" * 63)
    assert len(long) <= 63 and long != channel_of("s" * 62 + "t")


async def test_without_its_connection_it_polls_fast_and_warns_once_per_outage(
    open_notices: Callable[[str], Notices], caplog: pytest.LogCaptureFixture
) -> None:
    nothing_there = f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/test"
    caplog.set_level(logging.WARNING, logger="gateway.store.notices")
    notices = open_notices(nothing_there)
    waiters = Waiters(notices)
    notices.send(WAITER + "action-1")  # kept for later, never raised
    await asyncio.sleep(1.6)  # attempts after 0.1, 0.3, 0.7 and 1.5 s
    assert not notices.listening
    assert waiters.poll_s(0.5) == 0.5
    warnings = [r for r in caplog.records if r.name == "gateway.store.notices"]
    assert [r.getMessage() for r in warnings] == [
        "store notices: cannot listen; polling at the fast intervals until it can, "
        "retrying by itself"
    ]
    assert "s3cret" not in caplog.text


def test_a_sqlite_store_has_no_notices(tmp_path: Path) -> None:
    svc = Services.from_config(make_config(tmp_path, "http://127.0.0.1:9"))
    assert svc.notices is None and svc.waiters.notices is None
    assert svc.switchboard.notices is None
