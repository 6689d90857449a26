"""Who may use the admin API, and the JSON it answers in.

Approvers authenticate with their own bearer tokens (`approvers` in the config), or with
an access token of their identity provider (`approvers_sso.audience`); an agent token is
unknown here. Kill switches and policy reloads also need the `operator` role.
Errors are the JSON of docs/errors.md.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from gateway.config import Principal
from gateway.errors import ErrorCode, GatewayError, render
from gateway.observability.ids import new_request_id
from gateway.services import Services

OPERATOR = "operator"


async def approver_of(request: web.Request, svc: Services) -> Principal:
    unknown = "send 'Authorization: Bearer <approver token>'; agent tokens are not accepted here"
    return await svc.approvers.identify(
        request.headers, unknown=unknown, missing=unknown, realm="callgate-admin"
    )


async def operator_of(request: web.Request, svc: Services, refusal: str) -> Principal:
    """The approver, who must hold the operator role (403 saying `refusal` otherwise)."""
    who = await approver_of(request, svc)
    if OPERATOR not in who.roles:
        raise GatewayError(ErrorCode.FORBIDDEN, refusal)
    return who


def json_response(document: Any) -> web.Response:
    return web.Response(
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
