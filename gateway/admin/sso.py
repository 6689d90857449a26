"""Signing in to /ui/ through the organisation's identity provider (`approvers_sso`,
docs/approvals.md, "Single sign-on"): `/ui/sso/start` sends the browser to the provider
with a new state, nonce and PKCE challenge, kept in a signed cookie for ten minutes;
`/ui/sso/callback` takes the browser back, checks the state against that cookie, and signs
the approver in (gateway/identity/sso.py) or shows why not, without a session."""

from __future__ import annotations

import logging
import secrets

from aiohttp import web

from gateway.admin import page
from gateway.admin.ui_sessions import SignedLogin, secure, set_cookie
from gateway.identity.sso import Login, SignInRefused, Sso, new_login
from gateway.services import SERVICES

log = logging.getLogger(__name__)


def _sso(request: web.Request) -> Sso:
    sso = request.app[SERVICES].sso
    if sso is None:
        raise web.HTTPNotFound()
    return sso


def _refused(request: web.Request, why: str) -> web.Response:
    log.warning("approver sign-in refused", extra={"reason": why})
    response = page.login_page(request, 403, f"Sign-in refused: {why}")
    response.del_cookie(SignedLogin.COOKIE, path="/ui")
    return response


async def start(request: web.Request) -> web.Response:
    sso = _sso(request)
    login = new_login()
    try:
        location = sso.authorization_url(login)
    except SignInRefused as refusal:
        return page.login_page(request, 503, f"Sign-in unavailable: {refusal}")
    response = web.Response(status=303, headers={"Location": location, **page.SECURITY_HEADERS})
    cookie = SignedLogin(sso.config.session_secret).dumps(
        {"state": login.state, "nonce": login.nonce, "verifier": login.verifier}
    )
    set_cookie(
        response,
        SignedLogin.COOKIE,
        cookie,
        SignedLogin.MAX_AGE_S,
        secure(request, request.app[SERVICES].config),
    )
    return response


async def callback(request: web.Request) -> web.Response:
    sso = _sso(request)
    kept = SignedLogin(sso.config.session_secret).loads(request.cookies.get(SignedLogin.COOKIE))
    if kept is None:
        return _refused(request, "this sign-in was not started here or took over ten minutes")
    state = request.query.get("state", "")
    if not secrets.compare_digest(state.encode(), str(kept.get("state", "")).encode()):
        return _refused(request, "the state does not match this browser's sign-in")
    if "error" in request.query:
        error = request.query["error"]
        said = error if error.isascii() and error.isprintable() else "an error"
        return _refused(request, f"the identity provider answered {said}")
    code = request.query.get("code")
    if not code:
        return _refused(request, "the identity provider sent no code")
    login = Login(str(kept["state"]), str(kept.get("nonce", "")), str(kept.get("verifier", "")))
    try:
        approver = await sso.sign_in(login, code)
    except SignInRefused as refusal:
        return _refused(request, str(refusal))
    response = page.signed_in(request, approver)
    response.del_cookie(SignedLogin.COOKIE, path="/ui")
    return response
