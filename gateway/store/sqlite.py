"""SQLite as callgate uses it: WAL, the configured durability, short waits for locks.

WAL lets readers (`callgate audit verify/export/tail`) run while the gateway writes, and
with `synchronous=NORMAL` a commit survives a crash of the process (not a power loss; that
is `FULL`, which syncs the log on every commit).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import ClassVar

import aiosqlite

# How long a write waits for a lock another process holds before it counts as failed.
BUSY_TIMEOUT_MS = 2000


async def connect(path: Path, synchronous: str = "NORMAL") -> aiosqlite.Connection:
    """An autocommit connection: each statement is its own transaction."""
    if synchronous not in ("NORMAL", "FULL"):
        raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    db = await aiosqlite.connect(path, isolation_level=None)
    try:
        await db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        async with db.execute("PRAGMA journal_mode=WAL") as cursor:
            row = await cursor.fetchone()
        if row is None or str(row[0]).lower() != "wal":
            raise sqlite3.OperationalError(f"{path}: cannot switch to WAL journaling")
        await db.execute(f"PRAGMA synchronous={synchronous}")
    except BaseException:
        await db.close()
        raise
    return db


class Store:
    """A store in one SQLite file, whose tables its migrations made (gateway/store/
    migrate.py): `open` connects as `connect` does; `close` is safe to call whether or not
    it is open."""

    NAME: ClassVar[str]  # for "the <NAME> store is not open"

    def __init__(self, path: Path, synchronous: str = "NORMAL") -> None:
        self.path = path
        self._synchronous = synchronous
        self._db: aiosqlite.Connection | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError(f"the {self.NAME} store is not open")
        return self._db

    async def open(self) -> None:
        self._db = await connect(self.path, self._synchronous)

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None


def connect_sync(path: Path) -> sqlite3.Connection:
    """A plain connection for the command-line tools; refuses to create a missing file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such database file")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return db
