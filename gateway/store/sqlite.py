"""SQLite as callgate uses it: WAL, the configured durability, short waits for locks.

WAL lets readers (`callgate audit verify/export/tail`) run while the gateway writes, and
with `synchronous=NORMAL` a commit survives a crash of the process (not a power loss; that
is `FULL`, which syncs the log on every commit).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite
from sqlalchemy import Engine, event

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


def prepare(engine: Engine, synchronous: str) -> None:
    """Give each new connection of `engine` (on a SQLite file) what `connect` gives its
    connection: the busy timeout, WAL, and `synchronous`."""
    if synchronous not in ("NORMAL", "FULL"):
        raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode=WAL")
            row = cursor.fetchone()
            if row is None or str(row[0]).lower() != "wal":
                raise sqlite3.OperationalError("cannot switch to WAL journaling")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
        finally:
            cursor.close()


def connect_sync(path: Path) -> sqlite3.Connection:
    """A plain connection for the command-line tools; refuses to create a missing file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such database file")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return db
