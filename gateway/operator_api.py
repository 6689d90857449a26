"""Operators' API on the admin listener (docs/operations.md): kill switches (engaged and
lifted by approvers holding the `operator` role, audited with who and why, in force on
every worker within a second), stuck sessions, and the admin API's own OpenAPI
description (`gateway/admin-api.yaml`, shipped in the package) as JSON."""

from __future__ import annotations

import functools
import json
from importlib import resources

import yaml
from aiohttp import web

from gateway.approvals.api import approver_of, json_response
from gateway.audit.events import event, iso, now
from gateway.config import Principal
from gateway.errors import ErrorCode, GatewayError
from gateway.request_body import admin_json
from gateway.services import SERVICES, Services
from gateway.store.switches import Switch
from gateway.switchboard import check_target

OPERATOR = "operator"


def _operator(request: web.Request, svc: Services) -> Principal:
    who = approver_of(request, svc)
    if OPERATOR not in who.roles:
        raise GatewayError(ErrorCode.FORBIDDEN, "kill switches need the operator role")
    return who


def _target(request: web.Request, svc: Services, *, configured: bool) -> str:
    """The target from the URL; with `configured`, it must name configured agents and
    tools (engaging), else it need only be well formed (lifting a stale switch)."""
    try:
        if not configured:
            return check_target(request.match_info["target"])
        return check_target(
            request.match_info["target"],
            {agent.id for agent in svc.config.agents},
            set(svc.tools),
        )
    except ValueError as exc:
        raise GatewayError(ErrorCode.BAD_REQUEST, str(exc)) from None


def _audit(svc: Services, target: str, engaged: bool, by: str, reason: str) -> None:
    if svc.audit is not None:
        svc.audit.append(event("switch", target=target, engaged=engaged, by=by, reason=reason))


async def list_switches(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    approver_of(request, svc)
    await svc.switchboard.refresh()
    return json_response({"switches": [s.as_json() for s in svc.switchboard.engaged]})


async def engage(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    who = _operator(request, svc)
    target = _target(request, svc, configured=True)
    body = await admin_json(request)  # an agent's rules: bounded depth, UTF-8, unique keys
    reason = body.get("reason") if isinstance(body, dict) else None
    if not isinstance(reason, str) or not reason.strip():
        raise GatewayError(
            ErrorCode.BAD_REQUEST, 'say why: the body must be {"reason": "…"} (agents see it)'
        )
    switch = Switch(target, reason.strip(), who.id, now())
    await svc.switchboard.store.engage(switch)
    await svc.switchboard.refresh()
    _audit(svc, target, True, who.id, switch.reason)
    return json_response(switch.as_json())


async def lift(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    who = _operator(request, svc)
    target = _target(request, svc, configured=False)
    if not await svc.switchboard.store.lift(target):
        raise GatewayError(ErrorCode.NOT_FOUND, f"switch {target} is not engaged")
    await svc.switchboard.refresh()
    _audit(svc, target, False, who.id, "")
    return json_response({"target": target, "lifted_by": who.id})


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
        for entry in svc.stuck.current()
    ]
    svc.metrics.sessions_stuck.set(len(sessions))
    return json_response({"sessions": sessions})


@functools.cache
def _openapi_json() -> bytes:
    text = resources.files("gateway").joinpath("admin-api.yaml").read_text("utf-8")
    return json.dumps(yaml.safe_load(text), ensure_ascii=False).encode()


async def openapi(request: web.Request) -> web.Response:
    """No token: the description holds nothing secret (it ships in the package and the
    docs), and clients read it before they have a token, as they probe /healthz."""
    return web.Response(body=_openapi_json(), content_type="application/json")


def add_operator_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_get("/api/v1/sessions", list_sessions)
    app.router.add_get("/api/v1/switches", list_switches)
    app.router.add_put("/api/v1/switches/{target}", engage)
    app.router.add_delete("/api/v1/switches/{target}", lift)
