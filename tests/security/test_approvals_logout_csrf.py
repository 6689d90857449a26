"""Issue 14, finding 11: the approvers' logout form is a state-changing form like the
others, so a cross-site POST without the session's CSRF token changes nothing."""

from __future__ import annotations

from typing import Any

from tests.support.approvals import CSRF, Tool, approval_config, log_in


async def test_a_forged_logout_keeps_the_session(
    tmp_path: Any, start_upstream: Any, start_gateway: Any
) -> None:
    gw = await start_gateway(config=approval_config(tmp_path, await start_upstream(Tool().app())))
    await log_in(gw.admin)
    page = await gw.admin.get("/ui/")
    csrf = CSRF.search(await page.text()).group(1)
    for forged in ({}, {"csrf": "forged"}, {"csrf": ""}):
        refused = await gw.admin.post(
            "/ui/logout",
            data=forged,
            headers={"Origin": "https://evil.example"},
            allow_redirects=False,
        )
        assert refused.status == 403
        assert not any("callgate_session" in c for c in refused.headers.getall("Set-Cookie", []))
        still = await gw.admin.get("/ui/", allow_redirects=False)
        assert still.status == 200, forged
    out = await gw.admin.post("/ui/logout", data={"csrf": csrf}, allow_redirects=False)
    assert (out.status, out.headers["Location"]) == (303, "/ui/login")
    assert (await gw.admin.get("/ui/", allow_redirects=False)).status == 303
