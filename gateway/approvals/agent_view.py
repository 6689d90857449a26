"""`GET /actions/{id}` on the agent listener: the agent that made a parked call polls its
action there with its own token (docs/approvals.md); anyone else gets 404."""

from __future__ import annotations

import json

from aiohttp import web

from gateway.approvals import states
from gateway.errors import ErrorCode, GatewayError, render
from gateway.observability.ids import new_request_id
from gateway.services import SERVICES


async def agent_action(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    request_id = new_request_id()
    try:
        agent = svc.agents.authenticate(
            request.headers, unknown="send 'Authorization: Bearer <your callgate agent token>'"
        )
        action = await svc.actions.get(request.match_info["id"])
        if action is None or action.document["agent"] != agent.id:
            raise GatewayError(ErrorCode.NOT_FOUND, "no such action for this agent")
    except GatewayError as error:
        return render(error, request_id)
    return web.Response(
        body=json.dumps(states.summary(action), ensure_ascii=False).encode(),
        content_type="application/json",
        headers={"X-Request-Id": request_id},
    )
