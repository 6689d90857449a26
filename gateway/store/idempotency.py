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

from sqlalchemy import Connection, bindparam, delete, select, update
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


# Built once, with parameters named p_<column> (SQLAlchemy keeps the column names for its
# VALUES and SET): building a statement per call cost more than running it.
_MINE = (
    idempotency.c.agent == bindparam("p_agent"),
    idempotency.c.key == bindparam("p_key"),
)
_UNANSWERED = (
    *_MINE,
    idempotency.c.owner == bindparam("p_owner"),
    idempotency.c.response.is_(None),
)
_LAPSED = idempotency.c.response.is_(None) & (idempotency.c.lease_until < bindparam("p_moment"))
# An expired key is free again, and so is a claim whose lease ran out without an answer
# (its gateway died) before it was sent; with `resend`, even one that was sent.
_FREE = delete(idempotency).where(
    *_MINE,
    (idempotency.c.expires_at < bindparam("p_moment")) | (_LAPSED & (idempotency.c.sent == 0)),
)
_FREE_RESENDABLE = delete(idempotency).where(
    *_MINE, (idempotency.c.expires_at < bindparam("p_moment")) | _LAPSED
)
_CLAIM = idempotency.insert().values(
    agent=bindparam("p_agent"),
    key=bindparam("p_key"),
    fingerprint=bindparam("p_fingerprint"),
    owner=bindparam("p_owner"),
    lease_until=bindparam("p_lease_until"),
    expires_at=bindparam("p_expires_at"),
)
_GET = select(
    idempotency.c.fingerprint,
    idempotency.c.owner,
    idempotency.c.lease_until,
    idempotency.c.response,
    idempotency.c.sent,
).where(*_MINE)
_ANSWER = (
    update(idempotency)
    .where(*_MINE, idempotency.c.owner == bindparam("p_owner"))
    .values(response=bindparam("p_response"))
)
_RENEW = update(idempotency).where(*_UNANSWERED).values(lease_until=bindparam("p_lease_until"))
_SENDING = (
    update(idempotency).where(*_UNANSWERED).values(sent=1, lease_until=bindparam("p_lease_until"))
)
_RELEASE = delete(idempotency).where(*_UNANSWERED)
_PURGE = delete(idempotency).where(idempotency.c.expires_at < bindparam("p_moment"))


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
        free = _FREE_RESENDABLE if resend else _FREE
        mine = {"p_agent": agent, "p_key": key}

        def work(db: Connection) -> Entry | None:
            while True:
                moment = time.time()
                db.execute(free, {**mine, "p_moment": moment})
                try:
                    db.execute(
                        _CLAIM,
                        {
                            **mine,
                            "p_fingerprint": fingerprint,
                            "p_owner": owner,
                            "p_lease_until": moment + lease_s,
                            "p_expires_at": moment + ttl_s,
                        },
                    )
                    return None
                except IntegrityError:
                    found = _get(db, mine)
                    if found is not None:
                        return found
                    # freed between the two statements: try again

        return await self.run(work)

    async def get(self, agent: str, key: str) -> Entry | None:
        return await self.run(lambda db: _get(db, {"p_agent": agent, "p_key": key}))

    async def _change(self, statement: Any, **parameters: Any) -> int:
        """Run one conditional statement; how many rows it changed. Each parameter is the
        statement's `p_<name>`."""
        named = {f"p_{name}": value for name, value in parameters.items()}
        return await self.run(lambda db: db.execute(statement, named).rowcount)

    async def answer(self, agent: str, key: str, owner: str, response: dict[str, Any]) -> bool:
        """Fill the owner's claim; False when the claim is no longer its own."""
        kept = json.dumps(response, ensure_ascii=False)
        changed = await self._change(_ANSWER, agent=agent, key=key, owner=owner, response=kept)
        return changed == 1

    async def renew(self, agent: str, key: str, owner: str, lease_s: float) -> bool:
        """Push the owner's unanswered claim's lease to `lease_s` from now; False when the
        claim is no longer its own (or already answered)."""
        until = time.time() + lease_s
        changed = await self._change(_RENEW, agent=agent, key=key, owner=owner, lease_until=until)
        return changed == 1

    async def sending(self, agent: str, key: str, owner: str, lease_s: float) -> bool:
        """Mark the owner's unanswered claim sent (renewing its lease) just before its
        request leaves; False when the claim is no longer its own: then send nothing."""
        until = time.time() + lease_s
        changed = await self._change(_SENDING, agent=agent, key=key, owner=owner, lease_until=until)
        return changed == 1

    async def release(self, agent: str, key: str, owner: str) -> None:
        """Forget a claim whose call sent nothing (or went to a tool that honours the key),
        so that a retry runs for real."""
        await self._change(_RELEASE, agent=agent, key=key, owner=owner)

    async def purge(self) -> int:
        return await self._change(_PURGE, moment=time.time())


def _get(db: Connection, mine: dict[str, str]) -> Entry | None:
    row = db.execute(_GET, mine).first()
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
