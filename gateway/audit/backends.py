"""Where the audit log's batches are committed: a SQLite file of this process's own, or a
PostgreSQL database that every replica of the gateway writes (docs/deployment.md, "Running
many replicas").

Both seal a batch after the chain's head and insert it in one transaction. The SQLite file
has one writer, so its head is kept in memory and only read again after a failure (another
process may have written to the file meanwhile). On PostgreSQL, every batch locks the
table against other writers, reads the head and seals on it inside its own transaction, so
that any number of writers make one chain.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Protocol

import aiosqlite
from sqlalchemy import insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.audit.chain import GENESIS, HEAD_QUERY, insert_sql, seal
from gateway.config import POSTGRESQL_PREFIX, AuditConfig
from gateway.store import migrate
from gateway.store.engine import safe_url, server_settings
from gateway.store.schema import audit_log
from gateway.store.sqlite import connect


class Backend(Protocol):
    async def open(self) -> None:
        """Connect, refusing a database the code cannot use (migrate.SchemaError)."""

    async def commit(self, records: list[dict[str, Any]]) -> int:
        """Seal `records` after the chain's head and commit them in one transaction;
        returns how many rows were written."""

    async def recover(self) -> None:
        """After a failed commit: whatever the next commit needs to start afresh."""

    def reason(self, exc: Exception) -> str:
        """Why a commit failed, for logs, /readyz and the record of the outage: no
        statement, parameter or credential in it."""

    async def close(self) -> None: ...


def backend(config: AuditConfig) -> Backend:
    if config.url.startswith(POSTGRESQL_PREFIX):
        return PostgresBackend(config.url, config.database_timeout_s)
    return SqliteBackend(config.path, config.synchronous)


class SqliteBackend:
    def __init__(self, path: Path, synchronous: str) -> None:
        self.path = path
        self._synchronous = synchronous
        self._db: aiosqlite.Connection | None = None
        self._seq = 0
        self._head = GENESIS

    async def open(self) -> None:
        """Open the log in a file its migrations made (gateway/store/migrate.py)."""
        self._db = await connect(self.path, self._synchronous)
        try:
            await self._read_head()
        except BaseException:
            await self._db.close()
            raise

    async def _read_head(self) -> None:
        assert self._db is not None
        async with self._db.execute(HEAD_QUERY) as cursor:
            row = await cursor.fetchone()
        self._seq, self._head = (row[0], row[1]) if row else (0, GENESIS)

    async def commit(self, records: list[dict[str, Any]]) -> int:
        assert self._db is not None
        rows, seq, head = seal(records, self._seq, self._head)
        # One statement is one transaction in autocommit mode.
        await self._db.execute(insert_sql(len(rows)), [v for row in rows for v in row])
        self._seq, self._head = seq, head
        return len(rows)

    async def recover(self) -> None:
        # Another process may have written to the file: continue from its head.
        with contextlib.suppress(Exception):
            await self._read_head()

    def reason(self, exc: Exception) -> str:
        return f"{type(exc).__name__}: {exc}"

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None


# SHARE ROW EXCLUSIVE conflicts with itself and with any INSERT, not with readers: one
# batch at a time takes the head, while `callgate audit verify|export|tail` read on.
_LOCK = text("LOCK TABLE audit_log IN SHARE ROW EXCLUSIVE MODE")
_HEAD = text(HEAD_QUERY)
_COLUMNS = ("seq", "time", "kind", "request_id", "record", "prev_hash", "hash")


class PostgresBackend:
    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url
        self._timeout_s = timeout_s
        self._engine: AsyncEngine | None = None

    async def open(self) -> None:
        """Refuse a database behind the code (the replicas share it, so `callgate db
        upgrade` upgrades it, not a starting gateway: docs/operations.md) or one that
        cannot be reached: SchemaError either way."""
        try:
            await migrate.check(self.url, migrate.AUDIT)
        except (OSError, SQLAlchemyError) as exc:
            where = f"audit database {safe_url(self.url)}"
            raise migrate.SchemaError(f"{where}: cannot be read: {self.reason(exc)}") from None
        parsed = make_url(self.url)
        options = parsed.query.get("options")
        settings = server_settings(options if isinstance(options, str) else "")
        # The writer commits one batch at a time: one connection. A statement (the lock
        # included) that takes longer than the timeout fails the batch, as a lost server.
        self._engine = create_async_engine(
            parsed.set(drivername="postgresql+asyncpg").difference_update_query(["options"]),
            pool_size=1,
            max_overflow=0,
            pool_timeout=self._timeout_s,
            hide_parameters=True,
            connect_args={
                "server_settings": settings,
                "timeout": self._timeout_s,
                "command_timeout": self._timeout_s,
            },
        )

    async def commit(self, records: list[dict[str, Any]]) -> int:
        assert self._engine is not None
        async with self._engine.begin() as connection:
            await connection.execute(_LOCK)
            row = (await connection.execute(_HEAD)).first()
            seq, head = (row[0], row[1]) if row is not None else (0, GENESIS)
            rows, _, _ = seal(records, seq, head)
            await connection.execute(
                insert(audit_log), [dict(zip(_COLUMNS, row, strict=True)) for row in rows]
            )
        return len(rows)

    async def recover(self) -> None:
        """Nothing: each commit reads the head, and the pool drops a broken connection."""

    def reason(self, exc: Exception) -> str:
        if isinstance(exc, DBAPIError) and exc.orig is not None:
            exc = exc.orig
        name = type(exc).__name__
        return f"{name}: {exc}" if str(exc) else name

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
