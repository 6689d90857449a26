"""Changed MCP tool definitions on the admin listener (docs/answers-and-pins.md, "Pinned
MCP tools"): any approver sees what changed; approvers holding the `operator` role accept
the new definition (it is pinned) or reject it (the tool stays held), audited with who and
why."""

from __future__ import annotations

from aiohttp import web

from gateway.admin.auth import approver_of, json_response, operator_of
from gateway.audit.events import event, now
from gateway.config import Tool
from gateway.errors import ErrorCode, GatewayError
from gateway.mcp.pins import review
from gateway.request_body import admin_json
from gateway.services import SERVICES, Services
from gateway.store.pins import PINNED, Pin

NEEDS_OPERATOR = "accepting or rejecting a tool's definition needs the operator role"


def _mcp_tool(request: web.Request, svc: Services) -> Tool:
    tool = svc.tools.get(request.match_info["tool"])
    if tool is None or tool.kind != "mcp":
        raise GatewayError(ErrorCode.NOT_FOUND, "no MCP tool of that name is configured")
    return tool


async def list_changes(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    await approver_of(request, svc)
    tool = _mcp_tool(request, svc)
    assert svc.pins is not None
    pins = await svc.pins.of_tool(tool.name)
    changes = [review(pin) for _, pin in sorted(pins.items()) if pin.status != PINNED]
    return json_response({"tool": tool.name, "pinning": tool.mcp_pinning, "changes": changes})


async def accept(request: web.Request) -> web.Response:
    return await _decide(request, accept=True)


async def reject(request: web.Request) -> web.Response:
    return await _decide(request, accept=False)


async def _decide(request: web.Request, *, accept: bool) -> web.Response:
    svc = request.app[SERVICES]
    who = await operator_of(request, svc, NEEDS_OPERATOR)
    tool = _mcp_tool(request, svc)
    body = await admin_json(request)
    digest = body.get("digest") if isinstance(body, dict) else None
    comment = body.get("comment", "") if isinstance(body, dict) else ""
    if not isinstance(digest, str) or not isinstance(comment, str):
        raise GatewayError(
            ErrorCode.BAD_REQUEST,
            'name the definition reviewed: the body must be {"digest": "<seen digest>"} '
            '(and may hold a "comment")',
        )
    name = request.match_info["name"]
    decided = await decide_change(svc, tool, name, digest, accept, who.id, comment)
    return json_response(decided.as_json())


async def decide_change(
    svc: Services, tool: Tool, name: str, digest: str, accept: bool, by: str, comment: str
) -> Pin:
    """Accept or reject the definition of `name` seen with `digest`, audited; the API's
    and the approvers' page's verdict alike. GatewayError 409 when none such awaits."""
    if name in tool.mcp_pins:
        raise GatewayError(
            ErrorCode.CONFLICT,
            f"{name!r} is pinned in the config (tools[].mcp_pins): change it there",
        )
    assert svc.pins is not None
    decided = await svc.pins.decide(tool.name, name, digest, accept, by, now())
    if decided is None:
        raise GatewayError(
            ErrorCode.CONFLICT,
            f"no changed definition of {name!r} with digest {digest} awaits review "
            "(decided meanwhile, or the server presents another one now)",
        )
    svc.pin_cache.pop(tool.name, None)
    if svc.audit is not None:
        verdict = "mcp_tool_change_accepted" if accept else "mcp_tool_change_rejected"
        svc.audit.append(
            event(verdict, tool=tool.name, name=name, digest=digest, by=by, comment=comment)
        )
    return decided


async def changes_of(svc: Services) -> list[dict[str, object]]:
    """Every MCP tool's changed definitions, for the approvers' page."""
    assert svc.pins is not None
    found = []
    for tool in svc.tools.values():
        if tool.kind == "mcp" and tool.mcp_pinning != "off":
            pins = await svc.pins.of_tool(tool.name)
            found += [review(pin) for _, pin in sorted(pins.items()) if pin.status != PINNED]
    return found
