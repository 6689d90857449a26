"""`GET /api/v1/sessions?state=stuck` (docs/limits.md): the agent sessions the loop
breaker has stopped, and until when."""

from __future__ import annotations

import logging

from aiohttp import web

from gateway.admin.auth import approver_of, json_response
from gateway.audit.events import iso
from gateway.errors import ErrorCode, GatewayError
from gateway.services import SERVICES

log = logging.getLogger(__name__)


async def list_sessions(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    await approver_of(request, svc)
    state = request.query.get("state", "stuck")
    if state != "stuck":
        raise GatewayError(ErrorCode.BAD_REQUEST, "state must be stuck")
    try:
        stuck = await svc.stuck.current()
    except Exception:
        log.exception("could not read the stuck sessions")
        raise GatewayError(
            ErrorCode.INTERNAL_ERROR,
            f"the stuck sessions could not be read from {svc.limiter.where}; retry shortly",
        ) from None
    sessions = [
        {
            "agent": entry.agent,
            "session": entry.session,
            "reason": entry.reason,
            "since": iso(entry.since),
            "until": iso(entry.until),
            "refusals": entry.refusals,
        }
        for entry in stuck
    ]
    svc.metrics.sessions_stuck.set(len(sessions))
    return json_response({"sessions": sessions})
