"""The approvers' web page on the admin listener (/ui/): the queue, one action, decide.

Server-rendered with jinja2, autoescaped: whatever an agent sent is shown as text, request
bodies as a tree of keys and values (gateway/admin/desk.py), never as markup or links. The
queue's rows are refetched every few seconds (/ui/pending, static/live.js). Login takes an
approver token, or goes through the organisation's identity provider (sso.py), and gives an
HttpOnly, SameSite=Lax session cookie (ui_sessions.py); every form carries a per-session
CSRF token. A Content-Security-Policy allows only this page's own stylesheet
and script, so even a rendering mistake could not run an agent's script.
"""

from __future__ import annotations

import hmac
import json
import secrets
import unicodedata
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web
from markupsafe import Markup
from multidict import MultiDictProxy

from gateway.admin import desk, tools
from gateway.admin.auth import OPERATOR
from gateway.admin.ui_sessions import SESSION_COOKIE, SESSIONS, Session, secure, set_cookie
from gateway.approvals import decisions
from gateway.config import Principal
from gateway.errors import SPECS, GatewayError
from gateway.services import SERVICES, Services

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"  # served at /ui/static
LOGIN_COOKIE = "callgate_login"
HISTORY = 50
SAME_AGENT_AND_TOOL = 5
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def visible(value: Any) -> Any:
    """Control and format characters (bidi overrides such as U+202E, zero-width ones) as
    `\\uXXXX`: an agent must not be able to make `0001` read as `1000`."""
    if (
        not isinstance(value, str)
        or isinstance(value, Markup)  # the page's own markup (a macro's output), not data
        or (value.isascii() and value.isprintable())
    ):
        return value
    return "".join(
        f"\\u{ord(c):04x}" if unicodedata.category(c) in ("Cc", "Cf") and c != "\n" else c
        for c in value
    )


_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    finalize=visible,  # every {{ value }} of every page
)
_templates.globals.update(fold_chars=desk.FOLD_CHARS, fold_items=desk.FOLD_ITEMS)


def _page(name: str, status: int = 200, **context: Any) -> web.Response:
    context.setdefault("notice", None)
    context.setdefault("approver", None)
    context.setdefault("csrf", "")
    context.setdefault("sso", False)
    html = _templates.get_template(name).render(**context)
    return web.Response(
        text=html, status=status, content_type="text/html", headers=SECURITY_HEADERS
    )


def render(name: str, status: int = 200, **context: Any) -> web.Response:
    """The template `name` as a page of its own, with this page's security headers."""
    return _page(name, status, **context)


def _cookie(
    request: web.Request, response: web.StreamResponse, name: str, value: str, max_age: float
) -> None:
    set_cookie(response, name, value, max_age, secure(request, request.app[SERVICES].config))


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, **SECURITY_HEADERS})


async def to_queue(request: web.Request) -> web.Response:
    return _redirect("/ui/")


def _session(request: web.Request) -> Session | None:
    return request.app[SESSIONS].get(request.cookies.get(SESSION_COOKIE))


def _same(given: object, expected: str) -> bool:
    return isinstance(given, str) and bool(expected) and hmac.compare_digest(given, expected)


async def login_form(request: web.Request) -> web.Response:
    return login_page(request)


def login_page(request: web.Request, status: int = 200, notice: str | None = None) -> web.Response:
    """The login page with a fresh CSRF token for its token form."""
    token = secrets.token_urlsafe(32)
    sso = request.app[SERVICES].config.approvers_sso is not None
    response = _page("login.html", status=status, csrf=token, notice=notice, sso=sso)
    _cookie(request, response, LOGIN_COOKIE, token, 600)
    return response


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    if not _same(form.get("csrf"), request.cookies.get(LOGIN_COOKIE, "")):
        return login_page(request, 403, "The form expired; log in again.")
    svc: Services = request.app[SERVICES]
    token = form.get("token")
    approver = svc.approvers.find(token) if isinstance(token, str) else None
    if approver is None:
        return login_page(request, 401, "That is not an approver token.")
    return signed_in(request, approver)


def signed_in(request: web.Request, approver: Principal) -> web.Response:
    """To the queue, with a new session for `approver`."""
    sessions = request.app[SESSIONS]
    response = _redirect("/ui/")
    _cookie(request, response, SESSION_COOKIE, sessions.create(approver), sessions.absolute_s)
    response.del_cookie(LOGIN_COOKIE, path="/ui")
    return response


async def _posted(request: web.Request) -> tuple[Session, MultiDictProxy[Any]] | web.Response:
    """The form a logged-in approver posted with the session's CSRF token, or the answer
    refusing it: every state-changing form (logout too) passes through here first."""
    session = _session(request)
    if session is None:
        return _redirect("/ui/login")
    form = await request.post()
    if not _same(form.get("csrf"), session.csrf):
        return _page(
            "login.html", status=403, notice="The form is missing its CSRF token: refused."
        )
    return session, form


async def logout(request: web.Request) -> web.StreamResponse:
    posted = await _posted(request)
    if isinstance(posted, web.Response):
        return posted
    request.app[SESSIONS].drop(request.cookies.get(SESSION_COOKIE))
    response = _redirect("/ui/login")
    response.del_cookie(SESSION_COOKIE, path="/ui")
    return response


def _filters(request: web.Request) -> dict[str, str]:
    return {name: request.query.get(name, "").strip() for name in desk.FILTERS}


async def _pending(svc: Services, wanted: dict[str, str]) -> tuple[list[Any], list[Any]]:
    """Every pending action as rows, and those the filters let through, in queue order."""
    every = [desk.row(a) for a in await svc.actions.find(state="pending")]
    return every, desk.queue_order(a for a in every if desk.matches(a, wanted))


async def queue(request: web.Request, notice: str | None = None) -> web.StreamResponse:
    session = _session(request)
    if session is None:
        return _redirect("/ui/login")
    svc: Services = request.app[SERVICES]
    wanted = _filters(request)
    every, pending = await _pending(svc, wanted)
    recent = await svc.actions.find(limit=HISTORY * 2)
    history = [desk.row(a) for a in recent if a.state != "pending"][:HISTORY]
    return _page(
        "queue.html",
        approver=session.approver,
        csrf=session.csrf,
        pending=pending,
        waiting=len(every),
        excluded=False,
        choices=desk.choices(every),
        wanted=wanted,
        live=f"/ui/pending?{urlencode(wanted)}",
        history=history,
        changes=await tools.changes_of(svc),
        operator=OPERATOR in session.approver.roles,
        notice=notice,
    )


async def pending_rows(request: web.Request) -> web.StreamResponse:
    """The queue's rows alone, which the open page fetches every few seconds (live.js)."""
    session = _session(request)
    if session is None:
        return web.Response(status=401, headers=SECURITY_HEADERS)
    svc: Services = request.app[SERVICES]
    every, pending = await _pending(svc, _filters(request))
    skip = request.query.get("exclude", "")
    shown = [a for a in pending if a["id"] != skip]
    return _page("pending.html", pending=shown, waiting=len(every), excluded=bool(skip))


async def action_page(
    request: web.Request, notice: str | None = None, status: int = 200, comment: str = ""
) -> web.StreamResponse:
    session = _session(request)
    if session is None:
        return _redirect("/ui/login")
    svc: Services = request.app[SERVICES]
    action = await svc.actions.get(request.match_info["id"])
    if action is None:
        return _page("login.html", status=404, notice="No such action.")
    view, approver = desk.row(action), session.approver
    decision, body = view["decision"], view["request"].get("body")
    same = await svc.actions.find(agent=view["agent"], tool=view["tool"], limit=HISTORY)
    earlier = [desk.row(a) for a in same if a.id != action.id and a.state != "pending"]
    result = view.get("result") or {}
    every, others = await _pending(svc, {})
    return _page(
        "action.html",
        status=status,
        approver=session.approver,
        csrf=session.csrf,
        notice=notice,
        comment=comment,
        action=view,
        badges=desk.badges(decision.get("tags", {})),
        key_fields=desk.key_fields(view["request"], decision.get("fields", [])),
        body_json=None if body is None else json.dumps(body, indent=2, ensure_ascii=False),
        body_tree=view["request"]["size"] <= desk.TREE_MAX_BYTES,
        body_hex=desk.hex_preview(view["request"]["body_base64"])
        if "body_base64" in view["request"]
        else None,
        effect=desk.effect(view),
        may_decide=not decision["roles"] or bool(set(decision["roles"]) & set(approver.roles)),
        earlier=earlier[:SAME_AGENT_AND_TOOL],
        result_body=desk.as_json(result.get("body") or "") or result.get("body"),
        result_hex=desk.hex_preview(result["body_base64"]) if "body_base64" in result else None,
        others=[a for a in others if a["id"] != action.id],
        waiting=len(every),
        excluded=True,
        live=f"/ui/pending?{urlencode({'exclude': action.id})}",
    )


async def _decide(request: web.Request, approve: bool) -> web.StreamResponse:
    posted = await _posted(request)
    if isinstance(posted, web.Response):
        return posted
    session, form = posted
    comment = form.get("comment", "")
    svc: Services = request.app[SERVICES]
    try:
        action = await decisions.decide(
            svc,
            request.match_info["id"],
            session.approver,
            approve,
            comment if isinstance(comment, str) else "",
        )
    except GatewayError as error:
        return await action_page(
            request,
            notice=error.message,
            status=SPECS[error.code].status,
            comment=comment if isinstance(comment, str) else "",
        )
    verb = "Approved" if approve else "Denied"
    return await action_page(request, notice=f"{verb}: the action is {action.state}.")


async def approve(request: web.Request) -> web.StreamResponse:
    return await _decide(request, True)


async def deny(request: web.Request) -> web.StreamResponse:
    return await _decide(request, False)


async def _tool_verdict(request: web.Request, accept: bool) -> web.StreamResponse:
    """An operator's verdict on a changed MCP tool definition, from the queue page."""
    posted = await _posted(request)
    if isinstance(posted, web.Response):
        return posted
    session, form = posted
    svc: Services = request.app[SERVICES]
    tool = svc.tools.get(request.match_info["tool"])
    name = request.match_info["name"]
    digest, comment = form.get("digest"), form.get("comment", "")
    if OPERATOR not in session.approver.roles:
        return await queue(request, notice=tools.NEEDS_OPERATOR + ".")
    if tool is None or tool.kind != "mcp" or not isinstance(digest, str):
        return await queue(request, notice="No such changed tool definition.")
    try:
        await tools.decide_change(
            svc,
            tool,
            name,
            digest,
            accept,
            session.approver.id,
            comment if isinstance(comment, str) else "",
        )
    except GatewayError as error:
        return await queue(request, notice=error.message)
    verb = "Accepted: the new definition is pinned" if accept else "Rejected: the tool stays held"
    return await queue(request, notice=f"{verb} ({tool.name} / {name}).")


async def accept_tool_change(request: web.Request) -> web.StreamResponse:
    return await _tool_verdict(request, True)


async def reject_tool_change(request: web.Request) -> web.StreamResponse:
    return await _tool_verdict(request, False)
