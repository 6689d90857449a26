"""Audit logs built with the gateway's own `seal()` and `insert_sql()` on real SQLite files,
and tampered with as someone with write access to the file could (dropping the triggers
that stand in the way)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from gateway.audit.chain import (
    GENESIS,
    HEAD_QUERY,
    Row,
    canonical,
    chain_hash,
    insert_sql,
    seal,
)
from gateway.audit.events import event
from gateway.store import migrate


def call(
    kind: str,
    request_id: str,
    *,
    agent: str = "bot",
    tool: str = "echo",
    method: str = "GET",
    path: str = "/items",
    time: str | None = None,
) -> dict[str, Any]:
    """A call record (`decision`, `intent` or `outcome`), at `time` if given, else now."""
    record = event(kind, request_id=request_id, agent=agent, tool=tool, method=method, path=path)
    if time is not None:
        record["time"] = time
    return record


def calls(count: int) -> list[dict[str, Any]]:
    """`count` records of complete calls: decision, intent, outcome of r1, then of r2, ..."""
    kinds = ("decision", "intent", "outcome")
    return [call(kinds[i % 3], f"r{i // 3 + 1}", agent=f"agent-{i + 1}") for i in range(count)]


def open_log(path: Path) -> sqlite3.Connection:
    """An autocommit connection to the audit file `path`, with the table and its triggers
    (made by the migrations, as the gateway makes them)."""
    asyncio.run(migrate.upgrade(migrate.sqlite_url(path), migrate.AUDIT))
    return sqlite3.connect(path, isolation_level=None)


def append(db: sqlite3.Connection, records: list[dict[str, Any]]) -> list[Row]:
    """Seal `records` after the log's head and insert them in one statement, as the gateway."""
    if not records:
        return []
    last = db.execute(HEAD_QUERY).fetchone()
    seq, head = last if last is not None else (0, GENESIS)
    rows, _, _ = seal(records, seq, head)
    db.execute(insert_sql(len(rows)), [value for row in rows for value in row])
    return rows


def write_log(path: Path, records: list[dict[str, Any]]) -> list[Row]:
    db = open_log(path)
    try:
        return append(db, records)
    finally:
        db.close()


def drop_triggers(db: sqlite3.Connection, *triggers: str) -> None:
    for trigger in triggers:
        db.execute(f"DROP TRIGGER {trigger}")


def drop_all_triggers(db: sqlite3.Connection) -> None:
    drop_triggers(db, "audit_log_no_update", "audit_log_no_delete", "audit_log_append_only")


def hash_at(db: sqlite3.Connection, seq: int) -> str:
    (digest,) = db.execute("SELECT hash FROM audit_log WHERE seq = ?", (seq,)).fetchone()
    return str(digest)


def forge_in_middle(db: sqlite3.Connection) -> None:
    """Make room at position 4 and insert a record correctly linked to record 3."""
    drop_all_triggers(db)
    for seq in (6, 5, 4):
        db.execute("UPDATE audit_log SET seq = seq + 1 WHERE seq = ?", (seq,))
    forged = call("decision", "forged", agent="mallory")
    forged["seq"] = 4
    text = canonical(forged)
    link = hash_at(db, 3)
    db.execute(
        insert_sql(1), (4, forged["time"], "decision", "forged", text, link, chain_hash(text, link))
    )
