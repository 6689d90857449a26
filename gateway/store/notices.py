"""Wake-ups between the processes sharing a PostgreSQL store (docs/deployment.md, "Running
many replicas"): one dedicated connection per process LISTENs on the store's channel and
sends a `pg_notify` when this process changes a row others may wait on (a waiter's name)
or a kill switch (`switches`).

Notices only make waiting shorter: every waiter still re-reads the store, slowly while
this connection listens (`poll_s`), at the fast intervals while it is down. Lost and
regained, it wakes every subscriber, since notices may have been missed in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from gateway.store.engine import asyncpg_dsn, safe_url

log = logging.getLogger(__name__)

SWITCHES = "switches"
WAITER = "waiter:"
APPLICATION_NAME = "callgate notices"

CHECK_S = 5.0  # an idle connection is checked this often, so a silent loss is found
BACKOFF_S = (0.1, 5.0)  # first and longest pause between reconnection attempts
_EARLY_S = 0.2  # a notice to send cuts a pause short, to no less than this
_MAX_PENDING = 1000  # notices kept while the connection is down; beyond, the oldest go
_MAX_PAYLOAD = 7999  # bytes: PostgreSQL's limit


def channel_of(schema: str) -> str:
    """The channel of the store in `schema`: NOTIFY never leaves its database, and
    stores in two schemas of one database must not wake each other."""
    channel = f"callgate.{schema}"
    if len(channel.encode()) <= 63:  # longer channel names are cut short by PostgreSQL
        return channel
    return "callgate." + hashlib.sha256(schema.encode()).hexdigest()[:32]


class Notices:
    def __init__(self, url: str, connect_timeout_s: float, listening_poll_s: float) -> None:
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self.listening_poll_s = listening_poll_s
        self.listening = False
        self.channel: str | None = None
        self._subscribers: list[tuple[str, Callable[[str], None], Callable[[], None]]] = []
        self._pending: dict[str, None] = {}  # an ordered set
        self._due = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def subscribe(
        self, prefix: str, heard: Callable[[str], None], lapsed: Callable[[], None]
    ) -> None:
        """`heard(rest)` for each notice from another process starting with `prefix`;
        `lapsed()` when listening starts or stops (anything may have been missed)."""
        self._subscribers.append((prefix, heard, lapsed))

    def poll_s(self, fast_s: float) -> float:
        """How long a waiter polling every `fast_s` without notices may wait now."""
        return max(fast_s, self.listening_poll_s) if self.listening else fast_s

    def send(self, payload: str) -> None:
        """Tell the other processes, soon (this never waits for the database)."""
        if len(payload.encode()) > _MAX_PAYLOAD:
            return  # the others find it by polling
        self._pending.pop(payload, None)
        self._pending[payload] = None
        while len(self._pending) > _MAX_PENDING:
            del self._pending[next(iter(self._pending))]
        self._due.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run_forever())

    async def close(self) -> None:
        """Stop listening, after a last, short try at sending what is pending."""
        if self._task is None:
            return
        if self._pending and self.listening:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    while self._pending and self.listening:
                        await asyncio.sleep(0.01)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run_forever(self) -> None:
        pause = BACKOFF_S[0]
        lost_at: float | None = None  # when this outage began
        attempts = 0
        while True:
            attempts += 1
            try:
                connection = await self._connect()
            except Exception as exc:
                if lost_at is None:
                    lost_at = time.monotonic()
                    log.warning(
                        "store notices: cannot listen; polling at the fast intervals until "
                        "it can, retrying by itself",
                        extra={"database": safe_url(self.url), "error": _reason(exc)},
                    )
                await self._pause(pause)
                pause = min(pause * 2, BACKOFF_S[1])
                continue
            if lost_at is not None:
                log.info(
                    "store notices: listening again",
                    extra={
                        "database": safe_url(self.url),
                        "outage_s": round(time.monotonic() - lost_at, 1),
                        "attempts": attempts,
                    },
                )
            pause, lost_at, attempts = BACKOFF_S[0], None, 0
            self._listening(True)
            try:
                await self._serve(connection)
                why = "the connection was closed"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                why = _reason(exc)
            finally:
                self._listening(False)
                connection.terminate()
            lost_at = time.monotonic()
            log.warning(
                "store notices: lost the listening connection; polling at the fast intervals "
                "until it is back, reconnecting by itself",
                extra={"database": safe_url(self.url), "error": why},
            )

    async def _connect(self) -> Any:
        import asyncpg

        dsn, settings = asyncpg_dsn(self.url)
        settings = {**settings, "application_name": APPLICATION_NAME}
        connection = await asyncpg.connect(
            dsn, timeout=self.connect_timeout_s, server_settings=settings
        )
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                schema = await connection.fetchval("SELECT current_schema()")
                self.channel = channel_of(schema or "public")
                # Which process listens where, for an operator reading pg_stat_activity.
                name = f"{APPLICATION_NAME} {os.getpid()} {self.channel}"[:63]
                await connection.execute("SELECT set_config('application_name', $1, false)", name)
                await connection.add_listener(self.channel, self._heard)
        except BaseException:
            connection.terminate()
            raise
        connection.add_termination_listener(lambda _connection: self._due.set())
        return connection

    async def _serve(self, connection: Any) -> None:
        """Send what is pending and check the connection, until it is lost."""
        while not connection.is_closed():
            if not self._pending:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(CHECK_S):
                        await self._due.wait()
            self._due.clear()
            if connection.is_closed():
                return
            async with asyncio.timeout(self.connect_timeout_s):
                if not self._pending:
                    await connection.fetchval("SELECT 1")
                    continue
                payloads = list(self._pending)
                self._pending.clear()  # anything sent again meanwhile is a later change
                try:
                    await connection.execute(
                        "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p",
                        self.channel,
                        payloads,
                    )
                except BaseException:
                    self._pending = {**dict.fromkeys(payloads), **self._pending}
                    raise

    async def _pause(self, pause_s: float) -> None:
        """`pause_s`, cut short when a notice is sent meanwhile: a row was just written,
        so the server answers, and the others hear nothing until this reconnects."""
        self._due.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(pause_s):
                await self._due.wait()
                await asyncio.sleep(_EARLY_S)  # at most one attempt per _EARLY_S

    def _heard(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        if pid == connection.get_server_pid():
            return  # this process's own: its waiters were woken when it was sent
        for prefix, heard, _lapsed in self._subscribers:
            if payload.startswith(prefix):
                heard(payload[len(prefix) :])

    def _listening(self, listening: bool) -> None:
        self.listening = listening
        for _prefix, _heard, lapsed in self._subscribers:
            lapsed()


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
