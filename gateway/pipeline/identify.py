"""identify: the agent's bearer token -> the configured agent.

Reads `Authorization: Bearer <token>`. Refuses with 401 `unauthenticated` when the header
is missing, malformed or names no agent. Cannot fail otherwise.
"""

from __future__ import annotations

from aiohttp import hdrs

from gateway.call import Call
from gateway.errors import ErrorCode, GatewayError
from gateway.headers import bearer_token
from gateway.services import Services

_CHALLENGE = {str(hdrs.WWW_AUTHENTICATE): 'Bearer realm="callgate"'}


async def run(call: Call, svc: Services) -> None:
    token = bearer_token(call.request.headers)
    if not token:
        raise GatewayError(
            ErrorCode.UNAUTHENTICATED,
            "no agent token: send 'Authorization: Bearer <your callgate agent token>'",
            headers=_CHALLENGE,
        )
    agent = svc.agents.find(token)
    if agent is None:
        raise GatewayError(
            ErrorCode.UNAUTHENTICATED,
            "the agent token is not known to this gateway",
            headers=_CHALLENGE,
        )
    call.agent = agent
