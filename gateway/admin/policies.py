"""Policies on the admin listener (docs/policies.md, changing them safely): `GET /api/v1/policies`
shows the served set and the last refused one to any approver; `POST
/api/v1/policies/reload` (operator role) loads the folder now and answers with what
happened."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.admin.auth import approver_of, json_response, operator_of
from gateway.errors import ErrorCode, GatewayError
from gateway.policy.errors import PolicyLoadError
from gateway.services import SERVICES, Services


def _status(svc: Services) -> dict[str, Any]:
    shadow = svc.shadow.status() if svc.shadow is not None else None
    return {**svc.policies.status(), "shadow": shadow, "openapi": svc.specs.status()}


async def show_policies(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    await approver_of(request, svc)
    return json_response(_status(svc))


async def reload_policies(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    who = await operator_of(request, svc, "reloading policies needs the operator role")
    previous = svc.policies.policy_version
    # A tool's document that no longer loads keeps its last good one; shown, never refused.
    openapi_problems = await svc.reload_specs("api", who.id)
    if svc.shadow is not None:
        await svc.shadow.try_reload("api", who.id)  # shown in the answer; never refused here
    try:
        changed = await svc.policies.reload("api", who.id)
    except PolicyLoadError as exc:
        raise GatewayError(
            ErrorCode.POLICY_INVALID,
            f"the policy set was refused and {previous[:12]} keeps serving: "
            + "; ".join(exc.problems),
        ) from None
    return json_response(
        {
            "reloaded": changed,
            "previous_version": previous,
            "openapi_problems": openapi_problems,
            **_status(svc),
        }
    )
