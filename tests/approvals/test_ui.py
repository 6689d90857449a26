"""The approvers' web page over plain HTTP: sessions, cookies, CSRF and security headers."""

from __future__ import annotations

from typing import Any

from tests.support.approvals import CSRF, Tool, approval_config, log_in
from tests.support.gateway import AGENT_TOKEN, auth


async def gateway(tmp_path: Any, start_upstream: Any, start_gateway: Any) -> tuple[Any, Tool]:
    tool = Tool()
    gw = await start_gateway(config=approval_config(tmp_path, await start_upstream(tool.app())))
    return gw, tool


async def test_pages_need_a_session(tmp_path, start_upstream, start_gateway):
    gw, _ = await gateway(tmp_path, start_upstream, start_gateway)
    for path in ("/ui/", "/ui/actions/x"):
        resp = await gw.admin.get(path, allow_redirects=False)
        assert (resp.status, resp.headers["Location"]) == (303, "/ui/login")
    resp = await gw.admin.post("/ui/actions/x/approve", data={}, allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (303, "/ui/login")


async def test_login_gives_a_lax_httponly_session_cookie(tmp_path, start_upstream, start_gateway):
    gw, _ = await gateway(tmp_path, start_upstream, start_gateway)
    form = await gw.admin.get("/ui/login")
    assert "default-src 'none'" in form.headers["Content-Security-Policy"]
    assert form.headers["X-Content-Type-Options"] == "nosniff"
    resp = await log_in(gw.admin)
    assert (resp.status, resp.headers["Location"]) == (303, "/ui/")
    cookie = next(v for v in resp.headers.getall("Set-Cookie") if "callgate_session=" in v)
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie and "Secure" not in cookie  # plain HTTP here
    assert "Path=/ui" in cookie
    page = await gw.admin.get("/ui/")
    assert page.status == 200
    assert "alice (finance)" in await page.text()


async def test_bad_logins_are_refused(tmp_path, start_upstream, start_gateway):
    gw, _ = await gateway(tmp_path, start_upstream, start_gateway)
    assert (await log_in(gw.admin, "wrong")).status == 401
    assert (await log_in(gw.admin, AGENT_TOKEN)).status == 401  # agents are not approvers
    await gw.admin.get("/ui/login")
    forged = await gw.admin.post(
        "/ui/login", data={"csrf": "guess", "token": "alice-approver-token"}
    )
    assert forged.status == 403
    assert (await gw.admin.get("/ui/", allow_redirects=False)).status == 303


async def test_decisions_need_the_sessions_csrf_token(tmp_path, start_upstream, start_gateway):
    gw, tool = await gateway(tmp_path, start_upstream, start_gateway)
    resp = await gw.post("/tools/echo/refunds", headers=auth(), json={"amount": 1})
    action_id = (await resp.json())["action_id"]
    await log_in(gw.admin)
    page = await gw.admin.get(f"/ui/actions/{action_id}")
    csrf = CSRF.search(await page.text()).group(1)
    for data in ({"comment": "x"}, {"comment": "x", "csrf": "not-it"}):
        refused = await gw.admin.post(f"/ui/actions/{action_id}/approve", data=data)
        assert refused.status == 403
    assert (await gw.services.actions.get(action_id)).state == "pending"
    done = await gw.admin.post(
        f"/ui/actions/{action_id}/deny", data={"comment": "not today", "csrf": csrf}
    )
    assert done.status == 200
    assert "Denied: the action is denied." in await done.text()
    assert tool.calls == []


async def test_logout_ends_the_session(tmp_path, start_upstream, start_gateway):
    gw, _ = await gateway(tmp_path, start_upstream, start_gateway)
    await log_in(gw.admin)
    page = await gw.admin.get("/ui/")
    csrf = CSRF.search(await page.text()).group(1)
    cookie = gw.admin.session.cookie_jar.filter_cookies(gw.admin.make_url("/ui/"))
    session_id = cookie["callgate_session"].value
    out = await gw.admin.post("/ui/logout", data={"csrf": csrf}, allow_redirects=False)
    assert out.status == 303
    gw.admin.session.cookie_jar.update_cookies({"callgate_session": session_id})
    again = await gw.admin.get("/ui/", allow_redirects=False)
    assert again.status == 303  # the old session id no longer works


async def test_static_files_are_served(tmp_path, start_upstream, start_gateway):
    gw, _ = await gateway(tmp_path, start_upstream, start_gateway)
    css = await gw.admin.get("/ui/static/style.css")
    assert css.status == 200 and "table.actions" in await css.text()
    js = await gw.admin.get("/ui/static/keys.js")
    assert js.status == 200 and "keydown" in await js.text()
