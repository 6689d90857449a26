"""approval: park a call whose decision requires a human, instead of sending it.

Stores the call whole as a pending action (credentials stripped) and answers 202 with where
to poll. With `Prefer: wait=N` (or the tool's `approval_wait_s`), holds the connection up
to N seconds, capped by `approvals.max_wait_s`, and answers with the tool's response if the
action is approved and executed in time. A retry with the same `Idempotency-Key` finds the
same action; the same key with another request is refused with 422.
"""

from __future__ import annotations

import re

from aiohttp import web

from gateway.approvals import parking, responses, states
from gateway.call import Call
from gateway.mcp import approvals as mcp_approvals
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
    assert call.decision is not None and call.tool is not None
    if not call.decision.approval_required:
        return None
    if call.mcp is not None and call.mcp.method == "tools/call":
        return await mcp_approvals.run(call, svc, _wait_s(call, svc))
    action = await parking.park(call, svc)
    call.action_id = action.id
    wait = _wait_s(call, svc)
    if wait > 0:
        action = await states.hold(svc, action, wait, call.tool.timeout_s)
    return responses.ended(action, call.request_id)
