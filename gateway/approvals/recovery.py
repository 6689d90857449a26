"""What runs whether or not anyone looks at the queue, at start-up and then every second:
pending actions expire when due, executions whose gateway died become outcome_unknown
(never re-sent), and approved actions no execution holds are run."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime

from gateway.approvals import execution, states
from gateway.audit.events import now
from gateway.services import Services
from gateway.store.actions import Action

log = logging.getLogger(__name__)

EXPIRY_INTERVAL_S = 1.0
# An execution from a gateway that predates leases has none: it is taken as lapsed this long
# after it started beyond the longest tool timeout.
_UNLEASED_MARGIN_S = 60.0


async def recover(svc: Services) -> None:
    """At start-up: sweep dead executions, run approved actions that never started, and
    start the loop that expires actions and sweeps again."""
    await sweep_dead_executions(svc)
    await run_approved(svc)
    svc.spawn(expire_forever(svc), loop=True)


async def expire_forever(svc: Services) -> None:
    """Expiry runs whether or not anyone looks at the queue."""
    while True:
        try:
            await expire_due(svc)
            await sweep_dead_executions(svc)
            await run_approved(svc)
        except Exception:
            log.exception("action expiry failed; retrying")
        await asyncio.sleep(EXPIRY_INTERVAL_S)


async def expire(svc: Services, action: Action) -> None:
    """A pending action past its `expires_at` ends `expired`, unless it moved meanwhile."""
    expired = await svc.actions.replace(action, {**action.document, "state": "expired"})
    if expired is not None:
        states.record(svc, expired.document, "pending", "gateway")
        svc.waiters.notify(action.id)


async def expire_due(svc: Services) -> None:
    for action in await svc.actions.due(now()):
        await expire(svc, action)


async def sweep_dead_executions(svc: Services) -> None:
    """Calls whose holder stopped renewing its lease (its gateway died mid-call) become
    outcome_unknown: never re-sent. The store takes only a lease still lapsed when written."""
    moment = time.time()
    unleased_s = _UNLEASED_MARGIN_S + max((t.timeout_s for t in svc.config.tools), default=10)
    for action in await svc.actions.lapsed(moment):
        if not _lapsed(action, moment, unleased_s):
            continue
        unknown = {**action.document, "state": "outcome_unknown"}
        if await svc.actions.end_lapsed(action, unknown, moment) is not None:
            states.record(
                svc, unknown, "executing", "gateway", "the gateway stopped during the call"
            )
            svc.waiters.notify(action.id)


def _lapsed(action: Action, moment: float, unleased_s: float) -> bool:
    if action.lease_until is not None:
        return action.lease_until < moment
    started = action.document.get("executing_since") or action.document["created_at"]
    return moment - datetime.fromisoformat(started).timestamp() > unleased_s


async def run_approved(svc: Services) -> None:
    """Approved actions no execution holds (a switch was lifted, an earlier try found the
    audit log down): the claim in `execute` keeps each to one execution."""
    if svc.audit is not None and not svc.audit.available:
        return
    for action in await svc.actions.in_state("approved"):
        if (
            svc.switchboard.covering(
                action.document["agent"],
                action.document["tool"],
                action.document["request"]["method"],
            )
            is None
        ):
            svc.spawn(execution.execute(svc, action))
