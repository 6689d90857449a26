"""Pending actions in SQLite: one row per action, changed only by conditional updates.

Every change is an UPDATE that only succeeds when the row still has the version the caller
read (`replace`, and the lease changes below). Two approvers, two workers or a restarted gateway
racing on one action cannot both win, which is what makes execution happen at most once.

An executing action carries a lease: the holder (one gateway process's random instance id)
and the moment it runs out, renewed while the call runs without changing the version. Only
an expired lease lets `end_lapsed` take the action from its holder (see docs/approvals.md).
Files from before leases are given the lease columns when upgraded (gateway/store/
migrate.py); their executing rows have no lease, and the caller decides those by their age.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from gateway.store.sqlite import Store

_COLUMNS = "version, document, body, lease_until"


@dataclass(frozen=True)
class Action:
    """One stored action: its JSON document (docs/approvals.md), the version that was
    read, and the request body to send once approved. Listings leave `result` (up to
    approvals.max_result_bytes each) out of the document; `get` has it."""

    document: dict[str, Any]
    version: int
    body: bytes
    # While executing: when its holder's lease runs out (unix time); None otherwise, and
    # for executions written before leases existed.
    lease_until: float | None = None

    @property
    def id(self) -> str:
        return str(self.document["id"])

    @property
    def state(self) -> str:
        return str(self.document["state"])


def _document_json(document: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in document.items() if k != "result"}, ensure_ascii=False)


class ActionStore(Store):
    NAME = "action"

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
                document["result"] = json.loads(row[4]) if row[4] is not None else None
            lease_until = None if row[3] is None else float(row[3])
            actions.append(Action(document, row[0], bytes(row[2]), lease_until))
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
        # A document read from a listing has no result: the stored one stays. A lease
        # lasts only while the action is executing.
        cursor = await self.db.execute(
            "UPDATE actions SET state = ?, document = ?, result = COALESCE(?, result), "
            "lease_holder = CASE WHEN ? = 'executing' THEN lease_holder END, "
            "lease_until = CASE WHEN ? = 'executing' THEN lease_until END, "
            "version = version + 1 WHERE id = ? AND version = ?",
            (
                document["state"],
                _document_json(document),
                None if result is None else json.dumps(result, ensure_ascii=False),
                document["state"],
                document["state"],
                action.id,
                action.version,
            ),
        )
        if cursor.rowcount != 1:
            return None
        lease_until = action.lease_until if document["state"] == "executing" else None
        return Action(document, action.version + 1, action.body, lease_until)

    async def claim(
        self, action: Action, document: dict[str, Any], holder: str, until: float
    ) -> Action | None:
        """`approved -> executing` with a lease for `holder` until `until` (unix time):
        one writer wins; None for every other (the row moved on, or is not approved)."""
        cursor = await self.db.execute(
            "UPDATE actions SET state = 'executing', document = ?, lease_holder = ?, "
            "lease_until = ?, version = version + 1 "
            "WHERE id = ? AND version = ? AND state = 'approved'",
            (_document_json(document), holder, until, action.id, action.version),
        )
        if cursor.rowcount != 1:
            return None
        return Action(document, action.version + 1, action.body, until)

    async def renew(self, claimed: Action, holder: str, until: float) -> bool:
        """Push the holder's lease on the execution it claimed to `until`; False when the
        action is no longer that execution (it ended, or was taken as lapsed)."""
        cursor = await self.db.execute(
            "UPDATE actions SET lease_until = ? "
            "WHERE id = ? AND version = ? AND state = 'executing' AND lease_holder = ?",
            (until, claimed.id, claimed.version, holder),
        )
        return cursor.rowcount == 1

    async def lapsed(self, moment: float) -> list[Action]:
        """Executing actions whose lease ran out before `moment`, and those with no lease
        (written by a gateway from before leases: the caller judges them by their age)."""
        return await self._select(
            "WHERE state = 'executing' AND (lease_until IS NULL OR lease_until < ?)", (moment,)
        )

    async def end_lapsed(
        self, action: Action, document: dict[str, Any], moment: float
    ) -> Action | None:
        """`executing -> document["state"]` only if the lease still ran out before
        `moment` (a live holder's renewal since the read keeps it) and nothing else moved."""
        cursor = await self.db.execute(
            "UPDATE actions SET state = ?, document = ?, lease_holder = NULL, "
            "lease_until = NULL, version = version + 1 "
            "WHERE id = ? AND version = ? AND state = 'executing' "
            "AND (lease_until IS NULL OR lease_until < ?)",
            (document["state"], _document_json(document), action.id, action.version, moment),
        )
        if cursor.rowcount != 1:
            return None
        return Action(document, action.version + 1, action.body)
