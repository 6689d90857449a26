"""Pending actions in the store (SQLite or PostgreSQL): one row per action, changed only
by conditional updates.

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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Update, select, update
from sqlalchemy.exc import IntegrityError

from gateway.store.database import Store
from gateway.store.schema import actions

_COLUMNS = (actions.c.version, actions.c.document, actions.c.body, actions.c.lease_until)


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
        statement = actions.insert().values(
            id=document["id"],
            state=document["state"],
            agent=document["agent"],
            tool=document["tool"],
            idempotency_key=key,
            created_at=document["created_at"],
            expires_at=document["expires_at"],
            version=1,
            document=_document_json(document),
            body=body,
        )
        try:
            await self.run(lambda db: db.execute(statement))
        except IntegrityError:
            if key is None:
                raise
            return False
        return True

    async def _select(
        self,
        *where: ColumnElement[bool],
        result: bool = False,
        order: bool = False,
        limit: int | None = None,
    ) -> list[Action]:
        columns = _COLUMNS + ((actions.c.result,) if result else ())
        query = select(*columns).where(*where)
        if order:
            query = query.order_by(actions.c.created_at.desc(), actions.c.id.desc())
        if limit is not None:
            query = query.limit(limit)
        rows = await self.run(lambda db: db.execute(query).all())
        return [_action(row, result) for row in rows]

    async def get(self, action_id: str) -> Action | None:
        found = await self._select(actions.c.id == action_id, result=True)
        return found[0] if found else None

    async def state_of(self, action_id: str) -> str | None:
        query = select(actions.c.state).where(actions.c.id == action_id)
        state = await self.run(lambda db: db.scalar(query))
        return None if state is None else str(state)

    async def release_key(self, action_id: str) -> None:
        """Free the action's key for a new action (the key stays readable, suffixed)."""
        await self._change(
            update(actions)
            .where(
                actions.c.id == action_id,
                actions.c.idempotency_key.is_not(None),
                actions.c.idempotency_key.not_like("%:done:%"),
            )
            .values(idempotency_key=actions.c.idempotency_key + ":done:" + actions.c.id)
        )

    async def by_key(self, agent: str, tool: str, key: str) -> Action | None:
        found = await self._select(
            actions.c.agent == agent, actions.c.tool == tool, actions.c.idempotency_key == key
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
        where = [
            column == value
            for column, value in (
                (actions.c.state, state),
                (actions.c.agent, agent),
                (actions.c.tool, tool),
            )
            if value is not None
        ]
        return await self._select(*where, order=True, limit=limit)

    async def due(self, now: str) -> list[Action]:
        """Pending actions whose time is up."""
        return await self._select(actions.c.state == "pending", actions.c.expires_at <= now)

    async def in_state(self, state: str) -> list[Action]:
        return await self._select(actions.c.state == state)

    async def _change(self, statement: Update) -> bool:
        """Run one conditional UPDATE; whether it changed the row."""
        return await self.run(lambda db: db.execute(statement).rowcount == 1)

    async def replace(self, action: Action, document: dict[str, Any]) -> Action | None:
        """Write `document` if the row is still at `action.version`; None if it moved on."""
        result = document.get("result")
        executing = document["state"] == "executing"
        # A document read from a listing has no result: the stored one stays. A lease
        # lasts only while the action is executing.
        changed = await self._change(
            update(actions)
            .where(actions.c.id == action.id, actions.c.version == action.version)
            .values(
                state=document["state"],
                document=_document_json(document),
                result=(
                    actions.c.result if result is None else json.dumps(result, ensure_ascii=False)
                ),
                lease_holder=actions.c.lease_holder if executing else None,
                lease_until=actions.c.lease_until if executing else None,
                version=actions.c.version + 1,
            )
        )
        if not changed:
            return None
        lease_until = action.lease_until if executing else None
        return Action(document, action.version + 1, action.body, lease_until)

    async def claim(
        self, action: Action, document: dict[str, Any], holder: str, until: float
    ) -> Action | None:
        """`approved -> executing` with a lease for `holder` until `until` (unix time):
        one writer wins; None for every other (the row moved on, or is not approved)."""
        changed = await self._change(
            update(actions)
            .where(
                actions.c.id == action.id,
                actions.c.version == action.version,
                actions.c.state == "approved",
            )
            .values(
                state="executing",
                document=_document_json(document),
                lease_holder=holder,
                lease_until=until,
                version=actions.c.version + 1,
            )
        )
        if not changed:
            return None
        return Action(document, action.version + 1, action.body, until)

    async def renew(self, claimed: Action, holder: str, until: float) -> bool:
        """Push the holder's lease on the execution it claimed to `until`; False when the
        action is no longer that execution (it ended, or was taken as lapsed)."""
        return await self._change(
            update(actions)
            .where(
                actions.c.id == claimed.id,
                actions.c.version == claimed.version,
                actions.c.state == "executing",
                actions.c.lease_holder == holder,
            )
            .values(lease_until=until)
        )

    async def lapsed(self, moment: float) -> list[Action]:
        """Executing actions whose lease ran out before `moment`, and those with no lease
        (written by a gateway from before leases: the caller judges them by their age)."""
        return await self._select(actions.c.state == "executing", _lease_ran_out(moment))

    async def end_lapsed(
        self, action: Action, document: dict[str, Any], moment: float
    ) -> Action | None:
        """`executing -> document["state"]` only if the lease still ran out before
        `moment` (a live holder's renewal since the read keeps it) and nothing else moved."""
        changed = await self._change(
            update(actions)
            .where(
                actions.c.id == action.id,
                actions.c.version == action.version,
                actions.c.state == "executing",
                _lease_ran_out(moment),
            )
            .values(
                state=document["state"],
                document=_document_json(document),
                lease_holder=None,
                lease_until=None,
                version=actions.c.version + 1,
            )
        )
        if not changed:
            return None
        return Action(document, action.version + 1, action.body)


def _lease_ran_out(moment: float) -> ColumnElement[bool]:
    return actions.c.lease_until.is_(None) | (actions.c.lease_until < moment)


def _action(row: Sequence[Any], result: bool) -> Action:
    version, document_json, body, lease_until = row[:4]
    document = json.loads(document_json)
    if result:
        document["result"] = json.loads(row[4]) if row[4] is not None else None
    return Action(
        document, int(version), bytes(body), None if lease_until is None else float(lease_until)
    )
