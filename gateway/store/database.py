"""The base of the three stores (actions, idempotency keys, kill switches): one database,
a SQLite file or PostgreSQL, whose tables its migrations made (gateway/store/migrate.py),
queried through SQLAlchemy Core so that both take the same statements.

Each statement is its own transaction (autocommit): every change the stores make is one
conditional statement, which is what lets several gateway processes share the database.

A store's operation is one synchronous function of a connection (`run`), so that it costs
one trip whatever the database: on PostgreSQL it runs on a pooled asyncpg connection
(SQLAlchemy awaits each statement), on SQLite in the store's own thread, on the one
connection that thread keeps, in batches that commit together (gateway/store/batches.py).
SQLite answers in microseconds, but going through the asyncio adapter cost several thread
hand-offs per statement (~700 µs a statement, measured) and a commit (an fsync with
`synchronous=FULL`) per statement.

A database that cannot be reached (refused, gone, or its pool exhausted for longer than
`storage.connect_timeout_s`) is 503 `store_unavailable` (docs/errors.md) for whoever needed
it; the next operation tries again, so the store is back as soon as the database is.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, TypeVar

from sqlalchemy import Connection, create_engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import ErrorCode, GatewayError
from gateway.store import engine, sqlite
from gateway.store.batches import Batches

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
        self._batches: Batches | None = None  # SQLite

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
            isolation_level="AUTOCOMMIT",  # Batches begins and commits itself
            connect_args={"timeout": sqlite.BUSY_TIMEOUT_MS / 1000},
        )
        sqlite.prepare(made, self._synchronous)
        batches = Batches(made.connect, f"callgate-{self.NAME}-store")
        await batches.start()
        self._batches = batches

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
            if self._batches is not None:
                return await self._batches.run(work)
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
        if self._batches is not None:
            await self._batches.stop()
            self._batches = None
