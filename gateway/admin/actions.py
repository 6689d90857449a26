"""The approvers' JSON API on actions (docs/approvals.md): list them, show one, approve or
deny it with an optional comment."""

from __future__ import annotations

from aiohttp import web

from gateway.admin.auth import approver_of, json_response
from gateway.approvals import STATES, decisions, states
from gateway.errors import ErrorCode, GatewayError
from gateway.request_body import admin_json
from gateway.services import SERVICES


async def list_actions(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    await approver_of(request, svc)
    state = request.query.get("status") or None
    if state is not None and state not in STATES:
        raise GatewayError(ErrorCode.BAD_REQUEST, f"status must be one of {', '.join(STATES)}")
    actions = await svc.actions.find(
        state=state,
        agent=request.query.get("agent") or None,
        tool=request.query.get("tool") or None,
    )
    return json_response({"actions": [states.summary(action) for action in actions]})


async def show_action(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    await approver_of(request, svc)
    action = await svc.actions.get(request.match_info["id"])
    if action is None:
        raise GatewayError(ErrorCode.NOT_FOUND, f"no action {request.match_info['id']}")
    return json_response(states.summary(action))


async def _comment(request: web.Request) -> str:
    if not request.can_read_body:
        return ""
    body = await admin_json(request)
    comment = body.get("comment", "") if isinstance(body, dict) else None
    if not isinstance(comment, str):
        raise GatewayError(ErrorCode.BAD_REQUEST, 'the body must be {"comment": "…"}')
    return comment


async def _verdict(request: web.Request, approve: bool) -> web.Response:
    svc = request.app[SERVICES]
    approver = await approver_of(request, svc)
    comment = await _comment(request)
    action = await decisions.decide(svc, request.match_info["id"], approver, approve, comment)
    return json_response(states.summary(action))


async def approve(request: web.Request) -> web.Response:
    return await _verdict(request, True)


async def deny(request: web.Request) -> web.Response:
    return await _verdict(request, False)
