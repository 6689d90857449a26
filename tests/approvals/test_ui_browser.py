"""The approvers' web page in a real headless Chromium (Debian's `chromium`, driven by
Playwright): log in, approve, see the result; agent-controlled text stays inert; a form
post without its CSRF token is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.approvals import Tool, approval_config
from tests.support.browser import launched, needs_browser
from tests.support.gateway import auth

if TYPE_CHECKING:
    from playwright.async_api import Page

pytestmark = needs_browser

XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    async with launched() as browser:
        page = await (await browser.new_context()).new_page()
        page.set_default_timeout(10_000)
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.dialogs = dialogs  # type: ignore[attr-defined]
        yield page


async def gateway(tmp_path: Any, start_upstream: Any, start_gateway: Any) -> tuple[Any, Tool, str]:
    tool = Tool()
    url = await start_upstream(tool.app())
    gw = await start_gateway(config=approval_config(tmp_path, url))
    return gw, tool, str(gw.admin.make_url("")).rstrip("/")


async def log_in(page: Page, admin: str, who: str = "alice") -> None:
    await page.goto(f"{admin}/ui/")
    assert page.url.endswith("/ui/login")
    await page.fill("input[name=token]", f"{who}-approver-token")
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{admin}/ui/")


async def test_log_in_approve_and_see_it_succeed(tmp_path, start_upstream, start_gateway, page):
    gw, tool, admin = await gateway(tmp_path, start_upstream, start_gateway)
    resp = await gw.post("/tools/echo/refunds", headers=auth(), json={"amount": 12})
    action_id = (await resp.json())["action_id"]
    await log_in(page, admin)
    row = page.locator("#pending tbody tr")
    assert await row.count() == 1
    assert "bot → echo: POST /refunds · amount 12" in await row.inner_text()
    assert "refunds need finance" in await row.inner_text()
    await row.locator("a").click()
    await page.wait_for_url(f"{admin}/ui/actions/{action_id}")
    assert '"amount": 12' in await page.locator("#body-json").text_content()
    await page.fill("#comment", "small refund, fine")
    await page.click("#approve")
    await page.wait_for_selector("#state.succeeded")
    assert "Approved: the action is succeeded." in await page.locator(".notice").inner_text()
    assert await page.locator("#result-status").inner_text() == "201"
    assert len(tool.calls) == 1
    await page.goto(f"{admin}/ui/")
    assert await page.locator("#pending").count() == 0
    history = await page.locator("#history").inner_text()
    assert "succeeded" in history and "alice" in history


async def test_agent_text_renders_as_inert_text(tmp_path, start_upstream, start_gateway, page):
    gw, tool, admin = await gateway(tmp_path, start_upstream, start_gateway)
    resp = await gw.post(
        "/tools/echo/refunds/%3Cscript%3Ewindow.__xss%3D3%3C%2Fscript%3E".replace("%2F", "-"),
        headers={**auth(), "X-Agent-Model": XSS, "X-Agent-Session": "javascript:alert(1)"},
        json={"note": XSS, "link": "javascript:window.__xss=4"},
    )
    assert resp.status == 202, await resp.text()
    action_id = (await resp.json())["action_id"]
    await log_in(page, admin)
    await page.goto(f"{admin}/ui/actions/{action_id}")
    text = await page.locator("main").inner_text()
    assert XSS in text  # shown, as text
    assert "javascript:alert(1)" in text
    assert await page.evaluate("window.__xss === undefined")
    assert await page.locator("main script, main img").count() == 0
    assert await page.locator("a[href^='javascript']").count() == 0
    assert page.dialogs == []  # type: ignore[attr-defined]
    await page.goto(f"{admin}/ui/")
    assert await page.evaluate("window.__xss === undefined")
    assert tool.calls == []


async def test_a_post_without_the_csrf_token_is_refused(
    tmp_path, start_upstream, start_gateway, page
):
    gw, tool, admin = await gateway(tmp_path, start_upstream, start_gateway)
    resp = await gw.post("/tools/echo/refunds", headers=auth(), json={"amount": 12})
    action_id = (await resp.json())["action_id"]
    await log_in(page, admin)
    await page.goto(f"{admin}/ui/actions/{action_id}")
    # The real form, posted without its hidden CSRF field.
    await page.evaluate("document.querySelector('form.decide input[name=csrf]').remove()")
    async with page.expect_response(f"{admin}/ui/actions/{action_id}/approve") as posted:
        await page.click("#approve")
    status = (await posted.value).status
    assert "CSRF" in await page.locator(".notice").inner_text()
    assert status == 403
    assert (await gw.services.actions.get(action_id)).state == "pending"
    assert tool.calls == []
