"""The admin API with access tokens of the approvers' identity provider (`approvers_sso.
audience`, docs/sso.md), and the page's cookies and sign-in start over plain HTTP, without
a browser."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from tests.support.approvals import CSRF, approver_headers
from tests.support.gateway import auth
from tests.support.oidc import API_AUDIENCE, CLIENT_ID
from tests.support.sso import SsoGateway


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def park_refund(gw: SsoGateway) -> str:
    resp = await gw.agent.post("/tools/echo/refunds", headers=auth(), json={"amount": 250})
    assert resp.status == 202, await resp.text()
    action_id: str = (await resp.json())["action_id"]
    return action_id


async def test_an_access_token_of_a_mapped_group_approves_as_the_person(sso_gateway):
    gw = await sso_gateway()
    action_id = await park_refund(gw)
    token = gw.idp.access_token("fiona")
    async with aiohttp.ClientSession(gw.admin) as admin:
        listed = await admin.get("/api/v1/actions?status=pending", headers=bearer(token))
        assert listed.status == 200
        assert [a["id"] for a in (await listed.json())["actions"]] == [action_id]
        resp = await admin.post(
            f"/api/v1/actions/{action_id}/approve", headers=bearer(token), json={"comment": "ok"}
        )
        assert resp.status == 200, await resp.text()
        action = await resp.json()
    assert action["state"] == "succeeded"
    assert [a["approver"] for a in action["approvals"]] == ["fiona@example.com"]
    assert len(gw.tool.calls) == 1


async def test_an_access_token_whose_role_the_action_does_not_ask_for_is_forbidden(
    sso_gateway,
):
    gw = await sso_gateway()
    action_id = await park_refund(gw)  # needs finance; oscar is ops and operator
    async with aiohttp.ClientSession(gw.admin) as admin:
        resp = await admin.post(
            f"/api/v1/actions/{action_id}/approve",
            headers=bearer(gw.idp.access_token("oscar")),
            json={"comment": "ok"},
        )
        assert resp.status == 403
        assert "one of the roles finance" in (await resp.json())["error"]["message"]
        # operator from the group mapping: the kill switches are oscar's to read.
        switches = await admin.get("/api/v1/switches", headers=bearer(gw.idp.access_token("oscar")))
        assert switches.status == 200
    assert gw.tool.calls == []


@pytest.mark.parametrize(
    ("user", "claims", "why"),
    [
        ("fiona", {"aud": "another-api"}, "the JWT was refused (audience)"),
        ("fiona", {"aud": CLIENT_ID}, "the JWT was refused (audience)"),  # an ID token's
        ("fiona", {"exp": 1_000_000}, "the JWT was refused (expired)"),
        ("fiona", {"iss": "https://elsewhere.example"}, "the JWT was refused (issuer)"),
        ("mallory", {}, "none of the groups allowed to approve"),
        ("fiona", {"groups": None}, "none of the groups allowed to approve"),
        ("fiona", {"groups": {"a": 1}}, "must be a list of strings"),
        ("fiona", {"email": "alice"}, "names an approver configured with a token"),
    ],
)
async def test_an_access_token_failing_a_check_is_unauthenticated(sso_gateway, user, claims, why):
    gw = await sso_gateway()
    async with aiohttp.ClientSession(gw.admin) as admin:
        resp = await admin.get(
            "/api/v1/actions", headers=bearer(gw.idp.access_token(user, **claims))
        )
        assert resp.status == 401
        error = (await resp.json())["error"]
    assert error["code"] == "unauthenticated"
    assert why in error["message"]
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="callgate-admin"'


async def test_a_token_signed_by_another_key_is_refused(sso_gateway):
    from tests.support.oidc import new_key

    gw = await sso_gateway()
    forged = gw.idp.token(key=new_key("RS256", kid=gw.idp.key("RS256").kid), aud=API_AUDIENCE)
    async with aiohttp.ClientSession(gw.admin) as admin:
        resp = await admin.get("/api/v1/actions", headers=bearer(forged))
        assert resp.status == 401
        assert "(signature)" in (await resp.json())["error"]["message"]


async def test_without_an_audience_access_tokens_are_not_accepted(sso_gateway):
    gw = await sso_gateway(audience=None)
    async with aiohttp.ClientSession(gw.admin) as admin:
        resp = await admin.get("/api/v1/actions", headers=bearer(gw.idp.access_token("fiona")))
        assert resp.status == 401
        static = await admin.get("/api/v1/actions", headers=approver_headers("alice"))
        assert static.status == 200


async def test_static_approver_tokens_keep_working_beside_sso(sso_gateway):
    gw = await sso_gateway()
    action_id = await park_refund(gw)
    async with aiohttp.ClientSession(gw.admin) as admin:
        resp = await admin.post(
            f"/api/v1/actions/{action_id}/approve",
            headers=approver_headers("alice"),
            json={"comment": "ok"},
        )
        assert resp.status == 200
        assert [a["approver"] for a in (await resp.json())["approvals"]] == ["alice"]


async def test_the_sign_in_start_sends_state_nonce_and_an_s256_challenge(sso_gateway):
    gw = await sso_gateway()
    async with aiohttp.ClientSession(gw.admin) as admin:
        resp = await admin.get("/ui/sso/start", allow_redirects=False)
        assert resp.status == 303
        location = resp.headers["Location"]
        cookie = next(v for v in resp.headers.getall("Set-Cookie") if "callgate_sso=" in v)
        second = await admin.get("/ui/sso/start", allow_redirects=False)
    assert location.startswith(f"{gw.idp.issuer}/authorize?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["redirect_uri"] == f"{gw.admin}/ui/sso/callback"
    assert query["client_id"] == CLIENT_ID and "client_secret" not in query
    again = {k: v[0] for k, v in parse_qs(urlsplit(second.headers["Location"]).query).items()}
    assert {again["state"], again["nonce"], again["code_challenge"]}.isdisjoint(
        {query["state"], query["nonce"], query["code_challenge"]}
    )
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/ui" in cookie
    assert query["state"] not in cookie  # signed and encoded, not a plain copy
    assert "Secure" not in cookie  # plain HTTP and an http:// redirect_url


async def test_cookies_are_secure_when_the_page_is_reached_over_https(sso_gateway):
    gw = await sso_gateway(redirect_url="https://callgate-admin.example.com/ui/sso/callback")
    async with aiohttp.ClientSession(gw.admin) as admin:
        start = await admin.get("/ui/sso/start", allow_redirects=False)
        login = await admin.get("/ui/login")
    for resp in (start, login):
        assert all("Secure" in v for v in resp.headers.getall("Set-Cookie")), resp.headers


async def test_without_sso_the_sign_in_routes_do_not_exist(tmp_path, start_upstream, start_gateway):
    from tests.support.approvals import approval_config

    gw = await start_gateway(config=approval_config(tmp_path, "http://127.0.0.1:9"))
    assert (await gw.admin.get("/ui/sso/start", allow_redirects=False)).status == 404
    page = await gw.admin.get("/ui/login")
    assert 'id="sso"' not in await page.text()


async def test_a_provider_down_at_start_leaves_the_gateway_unready_and_sign_in_unavailable(
    sso_gateway,
):
    gw = await sso_gateway(idp_down=True)
    async with aiohttp.ClientSession(gw.admin) as admin:
        ready = await admin.get("/readyz")
        assert ready.status == 503
        assert "approvers_sso" in await ready.json()
        start = await admin.get("/ui/sso/start", allow_redirects=False)
        assert start.status == 503
        assert "could not be fetched yet" in await start.text()
        assert "callgate_sso" not in start.headers.get("Set-Cookie", "")
        # The provider is back: the next fetch (or an unknown key's) finds it.
        gw.idp.down = False
        assert await gw.services.sso.keys.load()
        assert (await admin.get("/readyz")).status == 200
        assert (await admin.get("/ui/sso/start", allow_redirects=False)).status == 303


async def test_a_session_cookie_with_a_changed_signature_opens_nothing(sso_gateway):
    gw = await sso_gateway()
    jar = aiohttp.CookieJar(unsafe=True)  # it keeps cookies of 127.0.0.1
    async with aiohttp.ClientSession(gw.admin, cookie_jar=jar) as admin:
        form = await admin.get("/ui/login")
        csrf = CSRF.search(await form.text())
        assert csrf is not None
        resp = await admin.post(
            "/ui/login",
            data={"csrf": csrf.group(1), "token": "alice-approver-token"},
            allow_redirects=False,
        )
        assert resp.status == 303
        value = resp.cookies["callgate_session"].value
        session_id, signature = value.split(".")
        assert (await admin.get("/ui/", allow_redirects=False)).status == 200
    tampered = f"{session_id}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    for cookie in (tampered, session_id):
        async with aiohttp.ClientSession(gw.admin) as other:
            resp = await other.get(
                "/ui/", headers={"Cookie": f"callgate_session={cookie}"}, allow_redirects=False
            )
            assert (resp.status, resp.headers["Location"]) == (303, "/ui/login")


async def test_a_sign_in_the_provider_refused_is_refused_here_too(sso_gateway):
    gw = await sso_gateway()
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(gw.admin, cookie_jar=jar) as browser:
        start = await browser.get("/ui/sso/start", allow_redirects=False)
        state = parse_qs(urlsplit(start.headers["Location"]).query)["state"][0]
        back = await browser.get(
            "/ui/sso/callback", params={"error": "access_denied", "state": state}
        )
        assert back.status == 403
        assert "the identity provider answered access_denied" in await back.text()
        assert "callgate_session" not in {c.key for c in jar}
        assert (await browser.get("/ui/", allow_redirects=False)).status == 303
    assert gw.idp.token_requests == []


@pytest.mark.parametrize("token_auth", ["client_secret_basic", "client_secret_post"])
async def test_the_client_secret_goes_the_way_the_provider_takes_it(sso_gateway, token_auth):
    gw = await sso_gateway()
    gw.idp.token_auth = token_auth
    assert await gw.services.sso.keys.load()  # the discovery document saying so
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(gw.admin, cookie_jar=jar) as browser:
        queue = await browser.get("/ui/sso/start")  # to the provider and back, then /ui/
        assert queue.status == 200 and str(queue.url) == f"{gw.admin}/ui/"
        assert "fiona@example.com" in await queue.text()
    [exchange] = gw.idp.token_requests
    in_form = "client_secret" in exchange
    assert in_form == (token_auth == "client_secret_post")
