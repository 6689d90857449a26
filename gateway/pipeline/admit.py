"""admit: a slot for the call among its tool's and its agent's calls in progress.

Reads the tool's `max_concurrent` and `protection.max_concurrent_per_agent`. Refuses with
503 `tool_busy` and `Retry-After: 1` when either is full, taking no slot then. The slots
taken are given back when the rest of the pipeline has answered: after a streamed answer
(a forwarded one) has been sent, and before a small one (an error, a replay) is written,
which costs nothing. Cannot fail.
"""

from __future__ import annotations

from aiohttp import web

from gateway.call import Call
from gateway.concurrency import AGENT, TOOL
from gateway.errors import ErrorCode, GatewayError
from gateway.pipeline.stage import Rest
from gateway.services import Services

RETRY_AFTER_S = 1


async def around(call: Call, svc: Services, rest: Rest) -> web.StreamResponse:
    held = _take(call, svc)
    try:
        return await rest()
    finally:  # cancellation included
        svc.in_flight.give_back(held)


def _take(call: Call, svc: Services) -> tuple[tuple[str, str], ...]:
    assert call.agent is not None and call.tool is not None
    tool, agent = call.tool, call.agent
    agent_cap = svc.config.protection.max_concurrent_per_agent
    wanted = (((AGENT, agent.id), agent_cap), ((TOOL, tool.name), tool.max_concurrent))
    full = svc.in_flight.take(wanted)
    if full is None:
        return tuple(slot for slot, _cap in wanted)
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
