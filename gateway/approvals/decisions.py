"""An approver's decision on a pending action: who may decide, one verdict each (a deny
says why: its comment reaches the agent), and the last approval needed starts the
execution."""

from __future__ import annotations

import asyncio

from gateway.approvals import execution, recovery, states
from gateway.audit.events import now
from gateway.config import Principal
from gateway.errors import ErrorCode, GatewayError
from gateway.services import Services
from gateway.store.actions import Action

_RACE_RETRIES = 5
DENY_NEEDS_A_COMMENT = (
    "a comment is required to deny: the agent is shown it, so say why the call was refused"
)


def _allowed_to_decide(action: Action, approver: Principal) -> None:
    roles = action.document["decision"]["roles"]
    if roles and not set(roles) & set(approver.roles):
        raise GatewayError(
            ErrorCode.FORBIDDEN,
            f"this action needs an approver with one of the roles {', '.join(roles)}",
        )


async def decide(
    svc: Services, action_id: str, approver: Principal, approve: bool, comment: str
) -> Action:
    """Record one approver's verdict; the last approval needed executes the action."""
    for _ in range(_RACE_RETRIES):
        action = await svc.actions.get(action_id)
        if action is None:
            raise GatewayError(ErrorCode.NOT_FOUND, f"no action {action_id}")
        if action.state == "pending" and action.document["expires_at"] <= now():
            await recovery.expire(svc, action)
            continue
        if action.state != "pending":
            raise GatewayError(ErrorCode.CONFLICT, f"the action is {action.state}, not pending")
        _allowed_to_decide(action, approver)
        if not approve and not comment.strip():
            raise GatewayError(ErrorCode.BAD_REQUEST, DENY_NEEDS_A_COMMENT)
        document = dict(action.document)
        approvals = list(document["approvals"])
        if any(a["approver"] == approver.id for a in approvals):
            raise GatewayError(ErrorCode.CONFLICT, "you have already approved this action")
        approvals.append(
            {
                "approver": approver.id,
                "verdict": "approve" if approve else "deny",
                "comment": comment,
                "at": now(),
            }
        )
        document["approvals"] = approvals
        if not approve:
            document["state"] = "denied"
        elif (
            sum(a["verdict"] == "approve" for a in approvals)
            >= document["decision"]["min_approvals"]
        ):
            document["state"] = "approved"
        updated = await svc.actions.replace(action, document)
        if updated is None:
            continue  # another approver or worker moved it first: read it again
        states.record(svc, document, "pending", approver.id, comment)
        if updated.state == "approved":
            # Shielded: an approver who hangs up does not cancel the execution.
            return await asyncio.shield(svc.spawn(execution.execute(svc, updated)))
        if updated.state == "denied":
            svc.waiters.notify(updated.id)
        return updated
    raise GatewayError(ErrorCode.CONFLICT, "the action kept changing; try again")
