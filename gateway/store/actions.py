"""Pending actions in SQLite: one row per action, changed only by conditional updates.

Every change goes through `replace(action, document)`: an UPDATE that only succeeds when the
row still has the version the caller read. Two approvers, two workers or a restarted gateway
racing on one action cannot both win, which is what makes execution happen at most once.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from gateway.store.sqlite import connect

SCHEMA = """
CREATE TABLE IF NOT EXISTS actions (
    id              TEXT PRIMARY KEY,
    state           TEXT NOT NULL,
    agent           TEXT NOT NULL,
    tool            TEXT NOT NULL,
    idempotency_key TEXT,
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    version         INTEGER NOT NULL,
    document        TEXT NOT NULL,
    result          TEXT,
    body            BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS actions_idempotency
    ON actions (agent, tool, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS actions_state ON actions (state, expires_at);
"""

_COLUMNS = "version, document, body"


@dataclass(frozen=True)
class Action:
    """One stored action: its JSON document (DESIGN.md section 5), the version that was
    read, and the request body to send once approved. Listings leave `result` (up to
    approvals.max_result_bytes each) out of the document; `get` has it."""

    document: dict[str, Any]
    version: int
    body: bytes

    @property
    def id(self) -> str:
        return str(self.document["id"])

    @property
    def state(self) -> str:
        return str(self.document["state"])


def _document_json(document: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in document.items() if k != "result"}, ensure_ascii=False)


class ActionStore:
    def __init__(self, path: Path, synchronous: str = "NORMAL") -> None:
        self.path = path
        self._synchronous = synchronous
        self._db: aiosqlite.Connection | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the action store is not open")
        return self._db

    async def open(self) -> None:
        self._db = await connect(self.path, self._synchronous)
        try:
            await self._db.executescript(SCHEMA)
        except BaseException:
            await self._db.close()
            self._db = None
            raise

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def insert(self, document: dict[str, Any], body: bytes, key: str | None) -> bool:
        """Store a new action; False when the agent's Idempotency-Key already has one."""
        try:
            await self.db.execute(
                "INSERT INTO actions (id, state, agent, tool, idempotency_key, created_at, "
                "expires_at, version, document, body) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
                (
                    document["id"],
                    document["state"],
                    document["agent"],
                    document["tool"],
                    key,
                    document["created_at"],
                    document["expires_at"],
                    _document_json(document),
                    body,
                ),
            )
        except sqlite3.IntegrityError:
            if key is None:
                raise
            return False
        return True

    async def _select(
        self, where: str, params: tuple[Any, ...], *, result: bool = False
    ) -> list[Action]:
        columns = _COLUMNS + (", result" if result else "")
        rows = await self.db.execute_fetchall(f"SELECT {columns} FROM actions {where}", params)
        actions = []
        for row in rows:
            document = json.loads(row[1])
            if result:
                document["result"] = json.loads(row[3]) if row[3] is not None else None
            actions.append(Action(document, row[0], bytes(row[2])))
        return actions

    async def get(self, action_id: str) -> Action | None:
        found = await self._select("WHERE id = ?", (action_id,), result=True)
        return found[0] if found else None

    async def state_of(self, action_id: str) -> str | None:
        rows = list(
            await self.db.execute_fetchall("SELECT state FROM actions WHERE id = ?", (action_id,))
        )
        return str(rows[0][0]) if rows else None

    async def release_key(self, action_id: str) -> None:
        """Free the action's key for a new action (the key stays readable, suffixed)."""
        await self.db.execute(
            "UPDATE actions SET idempotency_key = idempotency_key || ':done:' || id "
            "WHERE id = ? AND idempotency_key IS NOT NULL AND idempotency_key NOT LIKE '%:done:%'",
            (action_id,),
        )

    async def by_key(self, agent: str, tool: str, key: str) -> Action | None:
        found = await self._select(
            "WHERE agent = ? AND tool = ? AND idempotency_key = ?", (agent, tool, key)
        )
        return found[0] if found else None

    async def find(
        self,
        *,
        state: str | None = None,
        agent: str | None = None,
        tool: str | None = None,
        limit: int = 500,
    ) -> list[Action]:
        """Newest first."""
        where, params = [], []
        for column, value in (("state", state), ("agent", agent), ("tool", tool)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        return await self._select(
            clause + " ORDER BY created_at DESC, id DESC LIMIT ?", (*params, limit)
        )

    async def due(self, now: str) -> list[Action]:
        """Pending actions whose time is up."""
        return await self._select("WHERE state = 'pending' AND expires_at <= ?", (now,))

    async def in_state(self, state: str) -> list[Action]:
        return await self._select("WHERE state = ?", (state,))

    async def replace(self, action: Action, document: dict[str, Any]) -> Action | None:
        """Write `document` if the row is still at `action.version`; None if it moved on."""
        result = document.get("result")
        # A document read from a listing has no result: the stored one stays.
        cursor = await self.db.execute(
            "UPDATE actions SET state = ?, document = ?, result = COALESCE(?, result), "
            "version = version + 1 WHERE id = ? AND version = ?",
            (
                document["state"],
                _document_json(document),
                None if result is None else json.dumps(result, ensure_ascii=False),
                action.id,
                action.version,
            ),
        )
        if cursor.rowcount != 1:
            return None
        return Action(document, action.version + 1, action.body)
