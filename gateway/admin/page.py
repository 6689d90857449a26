"""The approvers' web page on the admin listener (/ui/): the queue, one action, decide.

Server-rendered with jinja2, autoescaped: whatever an agent sent is shown as text, request
bodies as pretty-printed JSON inside <pre>, never as markup or links. Login takes an
approver token and gives an HttpOnly, SameSite=Strict session cookie; every form carries a
per-session CSRF token. A Content-Security-Policy allows only this page's own stylesheet
and script, so even a rendering mistake could not run an agent's script.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web
from multidict import MultiDictProxy

from gateway.admin import tools
from gateway.admin.auth import OPERATOR
from gateway.approvals import decisions, states
from gateway.config import Principal
from gateway.errors import GatewayError
from gateway.services import SERVICES, Services
from gateway.store.actions import Action

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"  # served at /ui/static
SESSION_COOKIE = "callgate_session"
LOGIN_COOKIE = "callgate_login"
SESSION_TTL_S = 8 * 3600
REFRESH_S = 5
HISTORY = 50
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def visible(value: Any) -> Any:
    """Control and format characters (bidi overrides such as U+202E, zero-width ones) as
    `\\uXXXX`: an agent must not be able to make `0001` read as `1000`."""
    if not isinstance(value, str) or (value.isascii() and value.isprintable()):
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


@dataclass
class Session:
    approver: Principal
    csrf: str
    expires: float


class Sessions:
    """Logged-in approvers, in memory: a restart logs everyone out."""

    def __init__(self) -> None:
        self._by_id: dict[str, Session] = {}

    def create(self, approver: Principal) -> str:
        moment = time.time()
        for stale in [k for k, v in self._by_id.items() if v.expires < moment]:
            del self._by_id[stale]
        session_id = secrets.token_urlsafe(32)
        self._by_id[session_id] = Session(
            approver, secrets.token_urlsafe(32), time.time() + SESSION_TTL_S
        )
        return session_id

    def get(self, session_id: str | None) -> Session | None:
        session = self._by_id.get(session_id or "")
        if session is None or session.expires < time.time():
            self._by_id.pop(session_id or "", None)
            return None
        return session

    def drop(self, session_id: str | None) -> None:
        self._by_id.pop(session_id or "", None)


SESSIONS = web.AppKey("ui_sessions", Sessions)


def _page(name: str, status: int = 200, **context: Any) -> web.Response:
    context.setdefault("refresh", None)
    context.setdefault("notice", None)
    context.setdefault("approver", None)
    context.setdefault("csrf", "")
    html = _templates.get_template(name).render(**context)
    return web.Response(
        text=html, status=status, content_type="text/html", headers=SECURITY_HEADERS
    )


def _cookie(response: web.StreamResponse, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/ui", httponly=True, samesite="Strict")


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, **SECURITY_HEADERS})


async def to_queue(request: web.Request) -> web.Response:
    return _redirect("/ui/")


def _session(request: web.Request) -> Session | None:
    return request.app[SESSIONS].get(request.cookies.get(SESSION_COOKIE))


def _same(given: object, expected: str) -> bool:
    return isinstance(given, str) and bool(expected) and hmac.compare_digest(given, expected)


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def _view(action: Action) -> dict[str, Any]:
    view = states.summary(action)
    created = datetime.fromisoformat(view["created_at"]).timestamp()
    view["age"] = _duration(time.time() - created)
    view["expires_in"] = _duration(view["time_left_s"]) if "time_left_s" in view else ""
    return view


async def login_form(request: web.Request) -> web.Response:
    token = secrets.token_urlsafe(32)
    response = _page("login.html", csrf=token)
    _cookie(response, LOGIN_COOKIE, token, 600)
    return response


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    if not _same(form.get("csrf"), request.cookies.get(LOGIN_COOKIE, "")):
        return _page("login.html", status=403, notice="The form expired; log in again.")
    svc: Services = request.app[SERVICES]
    token = form.get("token")
    approver = svc.approvers.find(token) if isinstance(token, str) else None
    if approver is None:
        fresh = secrets.token_urlsafe(32)
        response = _page(
            "login.html", status=401, csrf=fresh, notice="That is not an approver token."
        )
        _cookie(response, LOGIN_COOKIE, fresh, 600)
        return response
    response = _redirect("/ui/")
    _cookie(response, SESSION_COOKIE, request.app[SESSIONS].create(approver), SESSION_TTL_S)
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


async def queue(request: web.Request, notice: str | None = None) -> web.StreamResponse:
    session = _session(request)
    if session is None:
        return _redirect("/ui/login")
    svc: Services = request.app[SERVICES]
    pending = [_view(a) for a in reversed(await svc.actions.find(state="pending"))]
    history = [_view(a) for a in await svc.actions.find(limit=HISTORY * 2) if a.state != "pending"][
        :HISTORY
    ]
    return _page(
        "queue.html",
        refresh=REFRESH_S,
        approver=session.approver,
        csrf=session.csrf,
        pending=pending,
        history=history,
        changes=await tools.changes_of(svc),
        operator=OPERATOR in session.approver.roles,
        notice=notice,
    )


async def action_page(request: web.Request, notice: str | None = None) -> web.StreamResponse:
    session = _session(request)
    if session is None:
        return _redirect("/ui/login")
    svc: Services = request.app[SERVICES]
    action = await svc.actions.get(request.match_info["id"])
    if action is None:
        return _page("login.html", status=404, notice="No such action.")
    view = _view(action)
    return _page(
        "action.html",
        approver=session.approver,
        csrf=session.csrf,
        notice=notice,
        action=view,
        request_json=json.dumps(view["request"], indent=2, ensure_ascii=False),
        result_json=json.dumps(view.get("result"), indent=2, ensure_ascii=False),
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
        return await action_page(request, notice=error.message)
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
