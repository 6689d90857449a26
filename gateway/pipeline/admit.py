"""admit: a slot for the call among its tool's and its agent's calls in progress.

Reads the tool's `max_concurrent` and `protection.max_concurrent_per_agent`. Refuses with
503 `tool_busy` and `Retry-After: 1` when either is full, taking no slot then. The slots
taken are listed in `call.held`; the call's handler gives them back when it returns: after
a streamed answer (a forwarded one) has been sent, or the call ended any other way. Cannot
fail.
"""

from __future__ import annotations

from gateway.call import Call
from gateway.concurrency import AGENT, TOOL
from gateway.errors import ErrorCode, GatewayError
from gateway.services import Services

RETRY_AFTER_S = 1


async def run(call: Call, svc: Services) -> None:
    assert call.agent is not None and call.tool is not None
    tool, agent = call.tool, call.agent
    agent_cap = svc.config.protection.max_concurrent_per_agent
    wanted = (((AGENT, agent.id), agent_cap), ((TOOL, tool.name), tool.max_concurrent))
    full = svc.in_flight.take(wanted)
    if full is None:
        call.held = tuple(slot for slot, _cap in wanted)
        return
    if full[0] == AGENT:
        message = (
            f"you have {agent_cap} calls in progress through this gateway, as many as an "
            f"agent may; wait for one to finish, then retry (after {RETRY_AFTER_S}s)"
        )
    else:
        message = (
            f"tool '{tool.name}' has {tool.max_concurrent} calls in progress through this "
            f"gateway, as many as it takes; retry after {RETRY_AFTER_S}s"
        )
    raise GatewayError(ErrorCode.TOOL_BUSY, message, headers={"Retry-After": str(RETRY_AFTER_S)})
