"""The base of the three stores (actions, idempotency keys, kill switches): one database,
a SQLite file or PostgreSQL, whose tables its migrations made (gateway/store/migrate.py),
queried through SQLAlchemy Core so that both take the same statements.

Each statement is its own transaction (autocommit): every change the stores make is one
conditional statement, which is what lets several gateway processes share the database.

A store's operation is one synchronous function of a connection (`run`), so that it costs
one trip whatever the database: on PostgreSQL it runs on a pooled asyncpg connection
(SQLAlchemy awaits each statement), on SQLite in the store's own thread, on the one
connection that thread keeps. SQLite answers in microseconds, but going through the
asyncio adapter cost several thread hand-offs per statement (~700 µs a statement,
measured); one hand-off per operation is ~100 µs.

A database that cannot be reached (refused, gone, or its pool exhausted for longer than
`storage.connect_timeout_s`) is 503 `store_unavailable` (docs/errors.md) for whoever needed
it; the next operation tries again, so the store is back as soon as the database is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar, TypeVar

from sqlalchemy import Connection, create_engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import ErrorCode, GatewayError
from gateway.store import engine, sqlite

T = TypeVar("T")


class Store:
    """`open` connects (a database that cannot be used fails the start, not a call);
    `close` is safe whether or not it is open. `location` is a SQLite file or a
    `sqlite:///` / `postgresql://` URL."""

    NAME: ClassVar[str]  # for "the <NAME> store is not open"

    def __init__(
        self,
        location: Path | str,
        synchronous: str = "NORMAL",
        *,
        pool_size: int = 5,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.url = f"sqlite:///{location}" if isinstance(location, Path) else location
        self._synchronous = synchronous
        self._pool_size = pool_size
        self._connect_timeout_s = connect_timeout_s
        self._pool: AsyncEngine | None = None  # PostgreSQL
        self._thread: ThreadPoolExecutor | None = None  # SQLite: the thread and its
        self._connection: Connection | None = None  # one connection

    async def open(self) -> None:
        file = engine.sqlite_file(self.url)
        if file is not None:
            await self._open_file(file)
        else:
            await self._open_pool()

    async def _open_file(self, file: Path) -> None:
        file.parent.mkdir(parents=True, exist_ok=True)
        made = create_engine(
            f"sqlite:///{file}",
            isolation_level="AUTOCOMMIT",
            connect_args={"timeout": sqlite.BUSY_TIMEOUT_MS / 1000},
        )
        sqlite.prepare(made, self._synchronous)
        thread = ThreadPoolExecutor(1, thread_name_prefix=f"callgate-{self.NAME}-store")
        try:
            self._connection = await asyncio.get_running_loop().run_in_executor(
                thread, made.connect
            )
        except BaseException:
            thread.shutdown()
            raise
        self._thread = thread

    async def _open_pool(self) -> None:
        made = engine.create(
            self.url,
            self._connect_timeout_s,
            isolation_level="AUTOCOMMIT",
            pool_size=self._pool_size,
            max_overflow=0,
            pool_timeout=self._connect_timeout_s,
            # A connection the server dropped (restart, failover) is found and replaced
            # when it is taken from the pool, not by the call that uses it.
            pool_pre_ping=True,
        )
        try:
            async with made.connect():
                pass
        except BaseException:
            await made.dispose()
            raise
        self._pool = made

    async def run(self, work: Callable[[Connection], T]) -> T:
        """`work` on a connection of the store: its statements, one trip."""
        try:
            if self._thread is not None and self._connection is not None:
                return await asyncio.get_running_loop().run_in_executor(
                    self._thread, work, self._connection
                )
            if self._pool is None:
                raise RuntimeError(f"the {self.NAME} store is not open")
            async with self._pool.connect() as pooled:
                return await pooled.run_sync(work)
        except IntegrityError:
            raise  # a statement refused, not an outage: `work` lets it out on purpose
        except (DBAPIError, PoolTimeout, OSError, TimeoutError) as error:
            raise GatewayError(
                ErrorCode.STORE_UNAVAILABLE,
                f"the gateway cannot reach its {self.NAME} store ({type(error).__name__}); "
                "retry later",
                headers={"Retry-After": "1"},
            ) from error

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        return "sqlite" if engine.sqlite_file(self.url) is not None else "postgresql"

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.dispose()
            self._pool = None
        thread, connection = self._thread, self._connection
        self._thread = self._connection = None
        if thread is not None and connection is not None:
            # In the thread that made it: a SQLite connection refuses any other.
            await asyncio.get_running_loop().run_in_executor(thread, _close, connection)
            thread.shutdown()


def _close(connection: Connection) -> None:
    connection.close()
    connection.engine.dispose()
