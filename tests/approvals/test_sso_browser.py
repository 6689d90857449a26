"""Approvers signing in to /ui/ through an OpenID provider started by the test
(tests/support/oidc.py), in a real headless Chromium: the authorization code flow with PKCE,
groups mapped to roles, the session cookie, logout, timeouts, CSRF, and every way a sign-in
must fail without a session."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web

from tests.support.audit import audit_source, wait_for_records
from tests.support.browser import launched, needs_browser
from tests.support.gateway import auth
from tests.support.sso import SsoGateway

pytestmark = needs_browser


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with launched() as chromium:
        yield chromium


async def new_page(browser: Any) -> Any:
    context = await browser.new_context()
    page = await context.new_page()
    page.set_default_timeout(10_000)
    return page


async def park_refund(gw: SsoGateway) -> str:
    resp = await gw.agent.post("/tools/echo/refunds", headers=auth(), json={"amount": 250})
    assert resp.status == 202, await resp.text()
    action_id: str = (await resp.json())["action_id"]
    return action_id


async def sign_in(page: Any, gw: SsoGateway, user: str = "fiona") -> Any:
    """Through the login page's button, the provider and back; the last response."""
    gw.idp.user = user
    await page.goto(f"{gw.admin}/ui/")
    assert page.url == f"{gw.admin}/ui/login"
    async with page.expect_response(lambda r: "/ui/sso/callback" in r.url) as back:
        await page.click("#sso")
    await page.wait_for_load_state()
    return await back.value


async def session_cookie(page: Any) -> dict[str, Any] | None:
    cookies = await page.context.cookies()
    return next((c for c in cookies if c["name"] == "callgate_session"), None)


async def test_sign_in_with_pkce_and_approve_as_the_person(sso_gateway, browser):
    gw = await sso_gateway()
    action_id = await park_refund(gw)
    page = await new_page(browser)
    await sign_in(page, gw)
    assert page.url == f"{gw.admin}/ui/"
    assert "fiona@example.com (finance)" in await page.locator("header").inner_text()
    # The authorization request: code flow, PKCE S256, a state and a nonce of its own.
    [asked] = gw.idp.authorizations
    assert asked["response_type"] == "code" and asked["code_challenge_method"] == "S256"
    assert len(asked["state"]) >= 32 and len(asked["nonce"]) >= 32
    assert set(asked["scope"].split()) == {"openid", "email", "profile"}
    # The code exchange: the verifier, and the secret in HTTP Basic only.
    [exchange] = gw.idp.token_requests
    assert len(exchange["code_verifier"]) >= 43 and "client_secret" not in exchange
    # The session cookie: signed, HttpOnly, SameSite=Lax, not Secure on plain HTTP.
    cookie = await session_cookie(page)
    assert cookie is not None
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["secure"]) == (True, "Lax", False)
    assert cookie["path"] == "/ui" and cookie["value"].count(".") == 1
    assert not [c for c in await page.context.cookies() if c["name"] == "callgate_sso"]

    await page.goto(f"{gw.admin}/ui/actions/{action_id}")
    await page.fill("#comment", "refund checked against the order")
    await page.click("#approve")
    await page.wait_for_selector("#state.succeeded")
    assert len(gw.tool.calls) == 1
    action = await gw.services.actions.get(action_id)
    assert [a["approver"] for a in action.document["approvals"]] == ["fiona@example.com"]
    records = await wait_for_records(
        audit_source(gw),
        lambda rs: any(r.get("to_state") == "approved" for r in rs),
    )
    approved = next(r for r in records if r.get("to_state") == "approved")
    assert approved["by"] == "fiona@example.com"


async def test_a_user_in_no_allowed_group_is_refused_without_a_session(sso_gateway, browser):
    gw = await sso_gateway()
    page = await new_page(browser)
    back = await sign_in(page, gw, "mallory")
    assert back.status == 403
    assert "none of the groups allowed to approve" in await page.locator(".notice").inner_text()
    assert await session_cookie(page) is None
    await page.goto(f"{gw.admin}/ui/")
    assert page.url == f"{gw.admin}/ui/login"


async def test_a_role_that_the_action_does_not_ask_for_cannot_approve(sso_gateway, browser):
    gw = await sso_gateway()
    action_id = await park_refund(gw)  # needs finance
    page = await new_page(browser)
    await sign_in(page, gw, "oscar")  # sre: ops and operator
    assert "oscar@example.com (ops, operator)" in await page.locator("header").inner_text()
    await page.goto(f"{gw.admin}/ui/actions/{action_id}")
    await page.fill("#comment", "looks fine")
    await page.click("#approve")
    await page.wait_for_selector(".notice[role=status]")
    assert "one of the roles finance" in await page.locator(".notice[role=status]").inner_text()
    assert (await gw.services.actions.get(action_id)).state == "pending"
    assert gw.tool.calls == []


async def test_logout_ends_the_session_for_the_old_cookie_too(sso_gateway, browser):
    gw = await sso_gateway()
    page = await new_page(browser)
    await sign_in(page, gw)
    kept = await session_cookie(page)
    assert kept is not None
    await page.click("header button[type=submit]")
    await page.wait_for_url(f"{gw.admin}/ui/login")
    assert await session_cookie(page) is None
    # The cookie kept from before the logout, in a fresh browser: the session is gone.
    replay = await new_page(browser)
    await replay.context.add_cookies([kept])
    response = await replay.goto(f"{gw.admin}/ui/")
    assert replay.url == f"{gw.admin}/ui/login"
    assert response.status == 200


async def test_an_idle_session_ends(sso_gateway, browser):
    gw = await sso_gateway(session_idle_s=1.0, session_absolute_s=60)
    page = await new_page(browser)
    await sign_in(page, gw)
    await page.goto(f"{gw.admin}/ui/")
    assert page.url == f"{gw.admin}/ui/"
    await asyncio.sleep(1.5)
    await page.goto(f"{gw.admin}/ui/")
    assert page.url == f"{gw.admin}/ui/login"


async def test_an_active_session_ends_at_its_absolute_timeout(sso_gateway, browser):
    gw = await sso_gateway(session_idle_s=2.0, session_absolute_s=4.0)
    page = await new_page(browser)
    await sign_in(page, gw)
    kept = await session_cookie(page)
    assert kept is not None
    for _ in range(3):  # active: never idle for two seconds
        await asyncio.sleep(0.9)
        await page.goto(f"{gw.admin}/ui/")
        assert page.url == f"{gw.admin}/ui/"
    while page.url == f"{gw.admin}/ui/":
        await asyncio.sleep(0.5)
        await page.goto(f"{gw.admin}/ui/")
    assert page.url == f"{gw.admin}/ui/login"
    # The server ended it, not only the browser: the same cookie, kept without an expiry.
    replay = await new_page(browser)
    await replay.context.add_cookies([{**kept, "expires": -1}])
    await replay.goto(f"{gw.admin}/ui/")
    assert replay.url == f"{gw.admin}/ui/login"


async def test_a_forged_post_with_a_valid_session_cookie_is_refused(
    sso_gateway, browser, start_upstream
):
    gw = await sso_gateway()
    action_id = await park_refund(gw)
    page = await new_page(browser)
    await sign_in(page, gw)
    # Another page (same site: 127.0.0.1 on another port, so the Lax cookie goes along)
    # posts the approve form without the session's CSRF token, then with a made-up one.
    target = f"{gw.admin}/ui/actions/{action_id}/approve"
    forged = (
        "<!doctype html><form method=post action='{target}'>"
        "<input name=comment value=forged>{field}</form>"
        "<script>document.forms[0].submit()</script>"
    )
    for field in ("", "<input name=csrf value=guessed-token>"):
        html = forged.format(target=target, field=field)

        async def attacker(request: web.Request, html: str = html) -> web.Response:
            return web.Response(text=html, content_type="text/html")

        app = web.Application()
        app.router.add_get("/", attacker)
        evil = await start_upstream(app)
        async with page.expect_response(target) as posted:
            await page.goto(evil)
        response = await posted.value
        assert response.status == 403
        assert "CSRF" in await page.locator(".notice").inner_text()
    assert (await gw.services.actions.get(action_id)).state == "pending"
    assert gw.tool.calls == []
    assert await session_cookie(page) is not None  # the session was real all along


async def stop_at_the_provider(page: Any, gw: SsoGateway) -> dict[str, str]:
    """Start a sign-in in the browser but stop before the provider: the authorization
    request's query (the browser now holds this sign-in's cookie)."""
    gw.idp.held = True
    await page.goto(f"{gw.admin}/ui/sso/start")
    assert "held at the provider" in await page.content()
    gw.idp.held = False
    return gw.idp.authorizations[-1]


async def code_of_another_sign_in(gw: SsoGateway, state: str) -> str:
    """A code the provider issued for a sign-in started elsewhere (its own PKCE challenge)."""
    query = {
        "response_type": "code",
        "client_id": "callgate-ui",
        "redirect_uri": gw.idp.redirect_uri,
        "scope": "openid email",
        "state": state,
        "nonce": "the-attackers-nonce",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
    }
    async with aiohttp.ClientSession() as client:
        resp = await client.get(f"{gw.idp.issuer}/authorize", params=query, allow_redirects=False)
        location = resp.headers["Location"]
    return parse_qs(urlsplit(location).query)["code"][0]


async def test_a_callback_with_another_state_is_refused(sso_gateway, browser):
    gw = await sso_gateway()
    page = await new_page(browser)
    asked = await stop_at_the_provider(page, gw)
    code = await code_of_another_sign_in(gw, "a-state-of-the-attacker")
    response = await page.goto(
        f"{gw.admin}/ui/sso/callback?code={code}&state=a-state-of-the-attacker"
    )
    assert response.status == 403
    assert "state does not match" in await page.locator(".notice").inner_text()
    assert gw.idp.token_requests == []  # refused before the code was ever used
    assert await session_cookie(page) is None
    assert asked["state"] != "a-state-of-the-attacker"


async def test_an_injected_code_fails_its_pkce_check_at_the_provider(sso_gateway, browser):
    gw = await sso_gateway()
    page = await new_page(browser)
    asked = await stop_at_the_provider(page, gw)
    # The attacker's code, delivered with the victim's own state: only PKCE can tell.
    code = await code_of_another_sign_in(gw, asked["state"])
    response = await page.goto(f"{gw.admin}/ui/sso/callback?code={code}&state={asked['state']}")
    assert response.status == 403
    assert "refused the code (invalid_grant)" in await page.locator(".notice").inner_text()
    [exchange] = gw.idp.token_requests
    assert exchange["code"] == code and exchange["code_verifier"]
    assert await session_cookie(page) is None


async def test_a_callback_without_a_started_sign_in_is_refused(sso_gateway, browser):
    gw = await sso_gateway()
    page = await new_page(browser)
    response = await page.goto(f"{gw.admin}/ui/sso/callback?code=x&state=y")
    assert response.status == 403
    assert "was not started here" in await page.locator(".notice").inner_text()
    assert await session_cookie(page) is None


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        ({"nonce": "a-nonce-of-another-sign-in"}, "(nonce)"),
        ({"nonce": None}, "(nonce)"),
        ({"aud": "another-client"}, "(audience)"),
        ({"iss": "http://127.0.0.1:9/another-issuer"}, "(issuer)"),
        ({"exp": 1_000_000}, "(expired)"),
        ({"azp": "another-client", "aud": ["callgate-ui", "another-client"]}, "(azp)"),
        ({"email_verified": False}, "not verified"),
        ({"sub": None}, "(sub)"),
        ({"groups": ["marketing", "sales"]}, "none of the groups allowed to approve"),
    ],
)
async def test_an_id_token_failing_a_check_gives_no_session(sso_gateway, browser, claims, why):
    gw = await sso_gateway()
    gw.idp.id_token_overrides = claims
    page = await new_page(browser)
    back = await sign_in(page, gw)
    assert back.status == 403
    notice = await page.locator(".notice").inner_text()
    assert "Sign-in refused" in notice and why in notice
    assert await session_cookie(page) is None


async def test_the_token_login_keeps_working_beside_sso(sso_gateway, browser):
    gw = await sso_gateway()
    page = await new_page(browser)
    await page.goto(f"{gw.admin}/ui/login")
    assert await page.locator("#sso").count() == 1
    await page.fill("input[name=token]", "alice-approver-token")
    await page.click("form button[type=submit]")
    await page.wait_for_url(f"{gw.admin}/ui/")
    assert "alice (finance)" in await page.locator("header").inner_text()
