"""The base of the three stores (actions, idempotency keys, kill switches): one database,
a SQLite file or PostgreSQL, whose tables its migrations made (gateway/store/migrate.py),
queried through SQLAlchemy Core so that both take the same statements.

Each statement is its own transaction (autocommit): every change the stores make is one
conditional statement, which is what lets several gateway processes share the database.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store import engine, sqlite

# SQLite has one writer at a time, so more connections only wait for each other's locks.
SQLITE_POOL_SIZE = 1


class Store:
    """`open` makes the engine (and its pool); `close` is safe whether or not it is open.
    `location` is a SQLite file or a `sqlite:///` / `postgresql://` URL."""

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
        self._engine: AsyncEngine | None = None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError(f"the {self.NAME} store is not open")
        return self._engine

    async def open(self) -> None:
        on_sqlite = engine.sqlite_file(self.url) is not None
        made = engine.create(
            self.url,
            sqlite.BUSY_TIMEOUT_MS / 1000 if on_sqlite else self._connect_timeout_s,
            isolation_level="AUTOCOMMIT",
            pool_size=SQLITE_POOL_SIZE if on_sqlite else self._pool_size,
            max_overflow=0,
            pool_timeout=self._connect_timeout_s,
        )
        if on_sqlite:
            sqlite.prepare(made, self._synchronous)
        try:  # connect now: a database that cannot be used fails the start, not a call
            async with made.connect():
                pass
        except BaseException:
            await made.dispose()
            raise
        self._engine = made

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
