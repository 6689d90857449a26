"""Kill switches on the admin listener (docs/operations.md, "Kill switches"): any approver
lists them; approvers holding the `operator` role engage and lift them, audited with who
and why, in force on every worker within a second."""

from __future__ import annotations

from aiohttp import web

from gateway.admin.auth import approver_of, json_response, operator_of
from gateway.audit.events import event, now
from gateway.errors import ErrorCode, GatewayError
from gateway.request_body import admin_json
from gateway.services import SERVICES, Services
from gateway.switches.store import Switch
from gateway.switches.targets import check_target

NEEDS_OPERATOR = "kill switches need the operator role"


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
    await approver_of(request, svc)
    await svc.switchboard.refresh()
    return json_response({"switches": [s.as_json() for s in svc.switchboard.engaged]})


async def engage(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    who = await operator_of(request, svc, NEEDS_OPERATOR)
    target = _target(request, svc, configured=True)
    body = await admin_json(request)  # an agent's rules: bounded depth, UTF-8, unique keys
    reason = body.get("reason") if isinstance(body, dict) else None
    if not isinstance(reason, str) or not reason.strip():
        raise GatewayError(
            ErrorCode.BAD_REQUEST, 'say why: the body must be {"reason": "…"} (agents see it)'
        )
    switch = Switch(target, reason.strip(), who.id, now())
    await svc.switchboard.engage(switch)
    _audit(svc, target, True, who.id, switch.reason)
    return json_response(switch.as_json())


async def lift(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    who = await operator_of(request, svc, NEEDS_OPERATOR)
    target = _target(request, svc, configured=False)
    if not await svc.switchboard.lift(target):
        raise GatewayError(ErrorCode.NOT_FOUND, f"switch {target} is not engaged")
    _audit(svc, target, False, who.id, "")
    return json_response({"target": target, "lifted_by": who.id})
