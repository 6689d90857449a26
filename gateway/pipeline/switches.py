"""switches: refuse a call that a kill switch covers, before any other work is done.

Reads the switchboard (in memory, refreshed from the store every second): `all`, the
agent's, the tool's, the agent-and-tool's switch, and `read-only`, which lets only GET, HEAD
and OPTIONS through. Refuses with 403 `switched_off`, naming the switch and the operator's
reason. Cannot fail otherwise.
"""

from __future__ import annotations

from gateway.call import Call
from gateway.errors import ErrorCode, GatewayError
from gateway.services import Services


async def run(call: Call, svc: Services) -> None:
    agent = call.agent.id if call.agent else None
    tool = call.tool.name if call.tool else None
    switch = svc.switchboard.covering(agent, tool, call.request.method)
    if switch is not None:
        raise GatewayError(
            ErrorCode.SWITCHED_OFF,
            f"calls are switched off here by an operator (switch {switch.target}: "
            f"{switch.reason}); nothing was sent. Do not retry until an operator lifts it",
        )
