"""approval: park a call whose decision requires a human, instead of sending it.

Stores the call whole as a pending action (credentials stripped) and answers 202 with where
to poll. With `Prefer: wait=N` (or the tool's `approval_wait_s`), holds the connection up
to N seconds, capped by `approvals.max_wait_s`, and answers with the tool's response if the
action is approved and executed in time. A retry with the same `Idempotency-Key` finds the
same action, and is answered with it (idempotency), also when the policy no longer parks
it; the same key with another request is refused with 422.
"""

from __future__ import annotations

import re

from aiohttp import web

from gateway.approvals import responses
from gateway.call import Call
from gateway.errors import ErrorCode, GatewayError
from gateway.pipeline import hooks
from gateway.services import Services

_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?(\d+)\"?", re.IGNORECASE)


def _wait_s(call: Call, svc: Services) -> float:
    assert call.tool is not None
    asked = None
    for value in call.request.headers.getall("Prefer", ()):
        match = _WAIT.search(value)
        if match:
            asked = float(match.group(1))
    wait = call.tool.approval_wait_s if asked is None else asked
    return min(wait, svc.config.approvals.max_wait_s)


async def run(call: Call, svc: Services) -> web.StreamResponse | None:
    assert call.decision is not None
    if call.decision.approval_required:
        return await hooks.of(call).held(call, svc, _wait_s(call, svc))
    if call.action_id is None:
        return None
    # Its Idempotency-Key belongs to a parked action, though the policy no longer parks it.
    action = await svc.actions.get(call.action_id)
    if action is None:
        raise GatewayError(
            ErrorCode.CONFLICT,
            "this Idempotency-Key belongs to an action this gateway no longer has; "
            "use a new key for a new call",
        )
    return responses.ended(action, call.request_id)
