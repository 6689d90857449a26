"""Idempotency keys in the store (SQLite or PostgreSQL): one row per (agent, key), claimed
by the first call and filled with its final response (or, for a call parked for approval,
its action's id, or, when the call may have reached the tool without its answer coming back
whole, the mark of that unknown outcome), kept for a TTL (IETF httpapi Idempotency-Key
draft).

The claim is a lease its owner renews while the call runs. Just before the request leaves
for the tool the owner marks the claim `sent` (and fails to, when its claim was taken
over, so it sends nothing). A lapsed claim is taken over only when it was never sent: a
gateway that died after sending leaves an unknown outcome, never a call to send again."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Delete, Update, delete, select, update
from sqlalchemy.exc import IntegrityError

from gateway.store.database import Store
from gateway.store.schema import idempotency


def waiter(agent: str, key: str) -> str:
    """What duplicates waiting for this key's first call wait on (see Waiters)."""
    return f"idempotency:{agent}:{key}"


@dataclass(frozen=True)
class Entry:
    fingerprint: str
    owner: str  # the request id of the call that claimed the key
    lease_until: float  # an unanswered claim may be taken over after this
    # None while the first call is in flight; then the tool's answer (gateway/answers.py),
    # {"action_id": …} for a call parked for approval, or
    # {"outcome_unknown": why} for a call that may have acted without its answer coming.
    response: dict[str, Any] | None
    sent: bool  # the request may have left for the tool

    @property
    def lapsed(self) -> bool:
        """Unanswered, and its lease ran out: the gateway holding it stopped."""
        return self.response is None and self.lease_until < time.time()

    @property
    def action_id(self) -> str | None:
        """The action the key maps to, when its call was parked for approval."""
        if self.response is None or "action_id" not in self.response:
            return None
        return str(self.response["action_id"])

    @property
    def outcome_unknown(self) -> str | None:
        """Why the key's call may or may not have taken effect, when that is so."""
        if self.response is not None and "outcome_unknown" in self.response:
            return str(self.response["outcome_unknown"])
        if self.lapsed and self.sent:
            return "gateway_stopped"
        return None


class IdempotencyStore(Store):
    NAME = "idempotency"

    async def claim(
        self,
        agent: str,
        key: str,
        fingerprint: str,
        owner: str,
        lease_s: float,
        ttl_s: float,
        *,
        resend: bool = False,
    ) -> Entry | None:
        """None when this call now owns the key; else what the key already holds.

        `resend`: a lapsed claim may be taken over even when it was sent (the tool
        honours the key itself, so sending it again cannot act twice)."""
        moment = time.time()
        # An expired key is free again, and so is a claim whose lease ran out without an
        # answer (its gateway died) before it was sent.
        lapsed = idempotency.c.response.is_(None) & (idempotency.c.lease_until < moment)
        if not resend:
            lapsed = lapsed & (idempotency.c.sent == 0)
        await self._change(
            delete(idempotency).where(
                *_key(agent, key), (idempotency.c.expires_at < moment) | lapsed
            )
        )
        try:
            async with self.engine.connect() as db:
                await db.execute(
                    idempotency.insert().values(
                        agent=agent,
                        key=key,
                        fingerprint=fingerprint,
                        owner=owner,
                        lease_until=moment + lease_s,
                        expires_at=moment + ttl_s,
                    )
                )
            return None
        except IntegrityError:
            found = await self.get(agent, key)
            if found is None:  # freed between the two statements: try once more
                return await self.claim(
                    agent, key, fingerprint, owner, lease_s, ttl_s, resend=resend
                )
            return found

    async def get(self, agent: str, key: str) -> Entry | None:
        query = select(
            idempotency.c.fingerprint,
            idempotency.c.owner,
            idempotency.c.lease_until,
            idempotency.c.response,
            idempotency.c.sent,
        ).where(*_key(agent, key))
        async with self.engine.connect() as db:
            row = (await db.execute(query)).first()
        if row is None:
            return None
        fingerprint, owner, lease_until, response, sent = row
        return Entry(
            fingerprint,
            owner,
            float(lease_until),
            json.loads(response) if response else None,
            bool(sent),
        )

    async def _change(self, statement: Update | Delete) -> int:
        """Run one conditional statement; how many rows it changed."""
        async with self.engine.connect() as db:
            return (await db.execute(statement)).rowcount

    async def answer(self, agent: str, key: str, owner: str, response: dict[str, Any]) -> bool:
        """Fill the owner's claim; False when the claim is no longer its own."""
        changed = await self._change(
            update(idempotency)
            .where(*_key(agent, key), idempotency.c.owner == owner)
            .values(response=json.dumps(response, ensure_ascii=False))
        )
        return changed == 1

    async def renew(self, agent: str, key: str, owner: str, lease_s: float) -> bool:
        """Push the owner's unanswered claim's lease to `lease_s` from now; False when the
        claim is no longer its own (or already answered)."""
        changed = await self._change(
            update(idempotency)
            .where(*_unanswered(agent, key, owner))
            .values(lease_until=time.time() + lease_s)
        )
        return changed == 1

    async def sending(self, agent: str, key: str, owner: str, lease_s: float) -> bool:
        """Mark the owner's unanswered claim sent (renewing its lease) just before its
        request leaves; False when the claim is no longer its own: then send nothing."""
        changed = await self._change(
            update(idempotency)
            .where(*_unanswered(agent, key, owner))
            .values(sent=1, lease_until=time.time() + lease_s)
        )
        return changed == 1

    async def release(self, agent: str, key: str, owner: str) -> None:
        """Forget a claim whose call sent nothing (or went to a tool that honours the key),
        so that a retry runs for real."""
        await self._change(delete(idempotency).where(*_unanswered(agent, key, owner)))

    async def purge(self) -> int:
        return await self._change(delete(idempotency).where(idempotency.c.expires_at < time.time()))


def _key(agent: str, key: str) -> tuple[ColumnElement[bool], ...]:
    return idempotency.c.agent == agent, idempotency.c.key == key


def _unanswered(agent: str, key: str, owner: str) -> tuple[ColumnElement[bool], ...]:
    return (*_key(agent, key), idempotency.c.owner == owner, idempotency.c.response.is_(None))
