"""The approvers' JSON API on the admin listener (docs/approvals.md), and the agents'
`GET /actions/{id}` on the agent listener.

Approvers authenticate with their own bearer tokens (`approvers` in the config); an agent
token is unknown here. Errors are the JSON of docs/errors.md.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from gateway.approvals import STATES, lifecycle
from gateway.config import Principal
from gateway.errors import ErrorCode, GatewayError, render
from gateway.headers import bearer_token
from gateway.observability.ids import new_request_id
from gateway.request_body import admin_json
from gateway.services import SERVICES, Services


def _services(request: web.Request) -> Services:
    return request.app[SERVICES]


def approver_of(request: web.Request, svc: Services) -> Principal:
    token = bearer_token(request.headers)
    approver = svc.approvers.find(token) if token else None
    if approver is None:
        raise GatewayError(
            ErrorCode.UNAUTHENTICATED,
            "send 'Authorization: Bearer <approver token>'; agent tokens are not accepted here",
            headers={"WWW-Authenticate": 'Bearer realm="callgate-admin"'},
        )
    return approver


def json_response(document: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(document, ensure_ascii=False).encode(),
        content_type="application/json",
    )


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except GatewayError as error:
        return render(error, new_request_id())


async def list_actions(request: web.Request) -> web.Response:
    svc = _services(request)
    approver_of(request, svc)
    state = request.query.get("status") or None
    if state is not None and state not in STATES:
        raise GatewayError(ErrorCode.BAD_REQUEST, f"status must be one of {', '.join(STATES)}")
    actions = await svc.actions.find(
        state=state,
        agent=request.query.get("agent") or None,
        tool=request.query.get("tool") or None,
    )
    return json_response({"actions": [lifecycle.summary(action) for action in actions]})


async def show_action(request: web.Request) -> web.Response:
    svc = _services(request)
    approver_of(request, svc)
    action = await svc.actions.get(request.match_info["id"])
    if action is None:
        raise GatewayError(ErrorCode.NOT_FOUND, f"no action {request.match_info['id']}")
    return json_response(lifecycle.summary(action))


async def _comment(request: web.Request) -> str:
    if not request.can_read_body:
        return ""
    body = await admin_json(request)
    comment = body.get("comment", "") if isinstance(body, dict) else None
    if not isinstance(comment, str):
        raise GatewayError(ErrorCode.BAD_REQUEST, 'the body must be {"comment": "…"}')
    return comment


async def _verdict(request: web.Request, approve: bool) -> web.Response:
    svc = _services(request)
    approver = approver_of(request, svc)
    comment = await _comment(request)
    action = await lifecycle.decide(svc, request.match_info["id"], approver, approve, comment)
    return json_response(lifecycle.summary(action))


async def approve(request: web.Request) -> web.Response:
    return await _verdict(request, True)


async def deny(request: web.Request) -> web.Response:
    return await _verdict(request, False)


def add_admin_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/actions", list_actions)
    app.router.add_get("/api/v1/actions/{id}", show_action)
    app.router.add_post("/api/v1/actions/{id}/approve", approve)
    app.router.add_post("/api/v1/actions/{id}/deny", deny)


async def agent_action(request: web.Request) -> web.Response:
    """GET /actions/{id} for the agent that made the call (404 for anyone else)."""
    svc = _services(request)
    request_id = new_request_id()
    try:
        token = bearer_token(request.headers)
        agent = svc.agents.find(token) if token else None
        if agent is None:
            raise GatewayError(
                ErrorCode.UNAUTHENTICATED,
                "send 'Authorization: Bearer <your callgate agent token>'",
            )
        action = await svc.actions.get(request.match_info["id"])
        if action is None or action.document["agent"] != agent.id:
            raise GatewayError(ErrorCode.NOT_FOUND, "no such action for this agent")
    except GatewayError as error:
        return render(error, request_id)
    response = json_response(lifecycle.summary(action))
    response.headers["X-Request-Id"] = request_id
    return response
