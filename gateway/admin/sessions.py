"""`GET /api/v1/sessions?state=stuck` (docs/limits.md): the agent sessions the loop
breaker has stopped, and until when."""

from __future__ import annotations

from aiohttp import web

from gateway.admin.auth import approver_of, json_response
from gateway.audit.events import iso
from gateway.errors import ErrorCode, GatewayError
from gateway.services import SERVICES


async def list_sessions(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    approver_of(request, svc)
    state = request.query.get("state", "stuck")
    if state != "stuck":
        raise GatewayError(ErrorCode.BAD_REQUEST, "state must be stuck")
    sessions = [
        {
            "agent": entry.agent,
            "session": entry.session,
            "reason": entry.reason,
            "since": iso(entry.since),
            "until": iso(entry.until),
            "refusals": entry.refusals,
        }
        for entry in await svc.stuck.current()
    ]
    svc.metrics.sessions_stuck.set(len(sessions))
    return json_response({"sessions": sessions})
