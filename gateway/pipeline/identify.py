"""identify: the agent's bearer token -> the configured agent, or the agent a verified JWT
names (gateway/identity/).

Reads `Authorization: Bearer <token>`. Refuses with 401 `unauthenticated` when the header
is missing, malformed, names no agent or holds a JWT that fails a check. Cannot fail
otherwise.
"""

from __future__ import annotations

from gateway.call import Call
from gateway.services import Services


async def run(call: Call, svc: Services) -> None:
    call.agent = await svc.agents.identify(
        call.request.headers,
        unknown="the agent token is not known to this gateway",
        missing="no agent token: send 'Authorization: Bearer <your callgate agent token>'",
        realm="callgate",
    )
