"""An action's states, the audit record of each move between them, and what callers read
from them: when an action ended, waiting for its end, the action as the APIs show it.

States: pending -> approved -> executing -> succeeded | failed; pending -> denied | expired;
executing -> outcome_unknown (its holder's lease ran out: the gateway died mid-call; found
at start-up and every second by any gateway on the store; never re-sent).
Each transition is a conditional update in the store (see store/actions.py) and an
`action` record in the audit log: parking.py parks, decisions.py decides, execution.py
executes, recovery.py expires and sweeps.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from gateway.audit.events import event
from gateway.audit.records import trace_id_of
from gateway.observability import tracing
from gateway.services import Services
from gateway.store.actions import Action

TERMINAL = frozenset({"succeeded", "failed", "denied", "expired", "outcome_unknown"})
# A held call re-reads the store this often when nothing wakes it: another process
# sharing it may decide, and tell this one only through notices, when they are heard
# (Waiters.poll_s; docs/deployment.md, "Running many replicas").
_POLL_S = 0.5


def record(svc: Services, action: dict[str, Any], before: str, by: str, comment: str = "") -> None:
    """The `action` audit record of a move from `before` to the action's state now."""
    if svc.audit is not None:
        svc.audit.append(
            event(
                "action",
                action_id=action["id"],
                request_id=action["request_id"],
                trace_id=trace_id_of(action),
                agent=action["agent"],
                tool=action["tool"],
                from_state=before,
                to_state=action["state"],
                by=by,
                comment=comment,
            )
        )


def ended_at(document: dict[str, Any]) -> str | None:
    """When the action ended (executed, denied or expired); None while it is open."""
    state = document["state"]
    if state in ("succeeded", "failed", "outcome_unknown"):
        return str(document.get("executed_at") or document["created_at"])
    if state == "expired":
        return str(document["expires_at"])
    if state == "denied":
        return max((str(a["at"]) for a in document["approvals"]), default=None)
    return None


async def hold(svc: Services, action: Action, wait_s: float, tool_timeout_s: float) -> Action:
    """The action after holding its call up to `wait_s`. One approved in time is going
    out now, so its answer is worth the wait (at most the tool's timeout more) rather than
    an answer that invites a resend."""
    with tracing.stage(svc.tracing, "callgate.approval.wait") as span:
        if span is not None:
            span.set_attribute("callgate.action_id", action.id)
        action = await wait_for_end(svc, action, wait_s)
        if action.state in ("approved", "executing"):
            action = await wait_for_end(svc, action, tool_timeout_s + 5)
        if span is not None:
            span.set_attribute("callgate.action_state", action.state)
    return action


async def wait_for_end(svc: Services, action: Action, timeout_s: float) -> Action:
    """The action once it has ended, or as it stands when `timeout_s` runs out."""
    deadline = read_at = time.monotonic()
    deadline += timeout_s
    state = action.state
    while state not in TERMINAL:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        await svc.waiters.wait(action.id, min(left, svc.waiters.poll_s(_POLL_S)), read_at)
        read_at = time.monotonic()
        state = await svc.actions.state_of(action.id) or state
    if state == action.state:
        return action
    return await svc.actions.get(action.id) or action


def summary(action: Action) -> dict[str, Any]:
    """The action as the APIs show it, with the seconds left while it is pending."""
    view = dict(action.document)
    if action.state == "pending":
        left = _seconds_until(view["expires_at"])
        view["time_left_s"] = max(0.0, round(left, 1))
    return view


def _seconds_until(moment: str) -> float:
    return datetime.fromisoformat(moment).timestamp() - time.time()
