"""The approvers' desk in a real headless Chromium: the queue's order, filters and live
rows, an action's page (headline, reason, badges, body tree, what the click does, earlier
calls, the result), deny needing a comment, the a/d keys, agent text in every field shown
as inert text, axe-core, a phone-width screen, and screenshots."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Principal
from tests.support.approvals import APPROVERS, Tool, approver_headers
from tests.support.browser import (
    Page,
    browser_page,
    needs_browser,
    screenshot,
    serious_violations,
)
from tests.support.gateway import OTHER_TOKEN, auth, make_config, sha

pytestmark = needs_browser

# Every parked call names its own summary, reason and risk, from its body, so a test can
# put agent text into each field the page shows.
DESK_REGO = """package gateway

import rego.v1

default decision := {"allow": false, "reason": "not allowed"}

body := input.request.body

decision := {"allow": true, "reason": "reads are fine"} if input.request.method == "GET"

decision := {
    "allow": true,
    "approval_required": true,
    "reason": sprintf("refunds over 100 need finance; the agent says: %v", [object.get(body, "note", "-")]),
    "approval": {
        "roles": ["finance"],
        "summary": sprintf("refund %v %v · order %v", [body.amount, body.currency, object.get(body, "order", "-")]),
        "fields": ["amount", "currency", "order", "missing.path"],
    },
    "tags": {"risk": object.get(body, "risk", "high"), "money": true},
} if {
    input.request.method == "POST"
    is_object(body)
    body.amount
}

decision := {
    "allow": true,
    "approval_required": true,
    "reason": "uploads need someone to look",
    "approval": {"roles": ["ops"]},
    "tags": {"risk": "low"},
} if {
    input.request.method == "POST"
    not is_object(body)
}
"""

XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    async with browser_page() as page:
        yield page


async def desk(tmp_path: Path, start_upstream: Any, start_gateway: Any) -> tuple[Any, Tool, str]:
    tool = Tool()
    url = await start_upstream(tool.app())
    policies = tmp_path / "desk-policies"
    policies.mkdir()
    (policies / "gateway.rego").write_text(DESK_REGO)
    ledger = {"name": "ledger", "upstream": url, "timeout_s": 2}
    config = make_config(tmp_path, url, policy_dir=policies, extra_tools=[ledger])
    approvers = tuple(
        Principal(id=name, token_sha256=sha(f"{name}-approver-token"), roles=tuple(roles))
        for name, roles in APPROVERS.items()
    )
    gw = await start_gateway(config=config.model_copy(update={"approvers": approvers}))
    return gw, tool, str(gw.admin.make_url("")).rstrip("/")


async def park(gw: Any, body: Any, path: str = "/refunds", **kwargs: Any) -> str:
    headers = {**auth(), **kwargs.pop("headers", {})}
    tool = kwargs.pop("tool", "echo")
    if isinstance(body, bytes):
        resp = await gw.post(f"/tools/{tool}{path}", headers=headers, data=body, **kwargs)
    else:
        resp = await gw.post(f"/tools/{tool}{path}", headers=headers, json=body, **kwargs)
    assert resp.status == 202, await resp.text()
    return str((await resp.json())["action_id"])


async def log_in(page: Page, admin: str, who: str = "alice") -> None:
    await page.goto(f"{admin}/ui/")
    await page.fill("input[name=token]", f"{who}-approver-token")
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{admin}/ui/")


async def headlines(page: Page) -> list[str]:
    return [text.strip() for text in await page.locator("#pending a.headline").all_inner_texts()]


async def no_script_ran(page: Page) -> None:
    assert await page.evaluate("window.__xss === undefined")
    assert await page.locator("main script, main img, main iframe").count() == 0
    assert page.dialogs == []  # type: ignore[attr-defined]


async def test_the_queue_is_riskiest_then_newest_and_filters(
    tmp_path, start_upstream, start_gateway, page
):
    gw, _, admin = await desk(tmp_path, start_upstream, start_gateway)
    await park(gw, {"amount": 150, "currency": "EUR", "order": "L1", "risk": "low"})
    await park(gw, {"amount": 250, "currency": "EUR", "order": "H1"})
    await park(gw, {"amount": 900, "currency": "EUR", "order": "C1", "risk": "critical"})
    await park(gw, {"amount": 300, "currency": "EUR", "order": "H2"}, tool="ledger")
    await park(gw, b"raw upload", "/upload", headers={"Content-Type": "text/plain"})
    await gw.post(
        "/tools/echo/refunds",
        headers={**auth(OTHER_TOKEN)},
        json={"amount": 1, "currency": "EUR", "order": "O1", "risk": "medium"},
    )
    await log_in(page, admin)
    assert await headlines(page) == [
        "bot → echo: refund 900 EUR · order C1",
        "bot → ledger: refund 300 EUR · order H2",
        "bot → echo: refund 250 EUR · order H1",
        "other → echo: refund 1 EUR · order O1",
        "bot → echo: POST /upload",
        "bot → echo: refund 150 EUR · order L1",
    ]
    first = page.locator("#pending tbody tr").first
    assert "critical" in await first.locator("td").first.inner_text()
    age = first.locator("td[data-label=age] time")
    assert (await age.inner_text()).endswith("ago")
    assert (await age.get_attribute("title")).endswith(" UTC")
    assert (await first.locator(".countdown time").inner_text()).startswith("in ")

    await page.select_option("select[name=risk]", "high")
    await page.click("form.filters button[type=submit]")
    await page.wait_for_url("**/ui/?*risk=high*")
    assert await headlines(page) == [
        "bot → ledger: refund 300 EUR · order H2",
        "bot → echo: refund 250 EUR · order H1",
    ]
    assert "2 shown of 6 waiting" in await page.locator("#pending-count").inner_text()
    await page.goto(f"{admin}/ui/?tool=echo&agent=bot&risk=high")
    assert await headlines(page) == ["bot → echo: refund 250 EUR · order H1"]
    await page.goto(f"{admin}/ui/?role=ops")
    assert await headlines(page) == ["bot → echo: POST /upload"]
    await page.goto(f"{admin}/ui/?agent=other")
    assert await headlines(page) == ["other → echo: refund 1 EUR · order O1"]


async def test_the_action_page_says_what_when_why_and_what_a_click_does(
    tmp_path, start_upstream, start_gateway, page
):
    gw, tool, admin = await desk(tmp_path, start_upstream, start_gateway)
    earlier = await park(gw, {"amount": 120, "currency": "EUR", "order": "A0"})
    resp = await gw.admin.post(
        f"/api/v1/actions/{earlier}/deny",
        headers=approver_headers("bob"),
        json={"comment": "duplicate of A1"},
    )
    assert resp.status == 200
    body = {
        "amount": 250,
        "currency": "EUR",
        "order": "A1",
        "customer": {"id": "c_9", "tier": "gold"},
        "lines": [{"sku": "X", "qty": 2}],
        "letter": "Dear team,\n" + "please refund. " * 20,
    }
    action_id = await park(gw, body, headers={"X-Trace-Note": "from-ticket-7"})
    await log_in(page, admin)
    await page.goto(f"{admin}/ui/actions/{action_id}")

    assert await page.locator("#headline").inner_text() == "bot → echo: refund 250 EUR · order A1"
    assert "the agent says: -" in await page.locator("#reason").inner_text()
    assert await page.locator("#tags li").all_inner_texts() == ["risk: high", "money"]
    fields = await page.locator("#key-fields").inner_text()
    assert fields.split() == [
        *("amount", "250", "currency", "EUR", "order", "A1", "missing.path", "absent"),
    ]
    tree = page.locator("#body dl.tree").first
    assert "tier" in await tree.inner_text() and "gold" in await tree.inner_text()
    letter = page.locator("#body details.long")
    assert await letter.get_attribute("open") is None  # the long text is folded
    assert "(311 characters)" in await letter.locator("summary").inner_text()
    headers = page.locator("#headers")
    assert await headers.get_attribute("open") is None
    await headers.locator("summary").click()
    assert "from-ticket-7" in await headers.inner_text()
    assert "Bearer" not in await headers.inner_text()  # credentials are never stored
    effect = await page.locator("#effect").inner_text()
    assert "Approving sends this POST to echo once; the agent will get the result" in effect
    assert "nobody has approved yet" in await page.locator("main").inner_text()
    history = await page.locator("#earlier").inner_text()
    assert "denied" in history and "refund 120 EUR · order A0" in history
    assert "bob: “duplicate of A1”" in history or "duplicate of A1" in history

    await page.fill("#comment", "matches the ticket")
    await page.click("#approve")
    await page.wait_for_selector("#state.succeeded")
    assert await page.locator("#result-status").inner_text() == "201"
    result = page.locator("#result-body")
    assert await result.get_attribute("open") is None
    await result.locator("summary").click()
    assert '"done": 1' in await result.inner_text()  # the tool's JSON, pretty-printed
    assert "approve by alice" in await page.locator("#approvals").inner_text()
    assert len(tool.calls) == 1


async def test_a_held_call_is_approved_with_the_a_key_and_its_agent_gets_the_answer(
    tmp_path, start_upstream, start_gateway, page
):
    gw, tool, admin = await desk(tmp_path, start_upstream, start_gateway)
    held = asyncio.create_task(
        gw.post(
            "/tools/echo/refunds",
            headers={**auth(), "Prefer": "wait=30"},
            json={"amount": 300, "currency": "EUR"},
        )
    )
    await log_in(page, admin)
    await page.wait_for_selector("#pending a.headline")
    await page.click("#pending a.headline")
    await page.wait_for_selector("#effect")
    assert "once; the agent is waiting" in await page.locator("#effect").inner_text()
    page.accept_dialogs = True  # type: ignore[attr-defined]
    await page.locator("h1").click()  # the focus outside the comment field
    await page.keyboard.press("a")
    await page.wait_for_selector("#state.succeeded")
    assert page.dialogs == ["approve this action?"]  # type: ignore[attr-defined]
    answer = await asyncio.wait_for(held, 10)
    assert answer.status == 201
    assert len(tool.calls) == 1


async def test_deny_needs_a_comment_in_the_page_and_on_the_server(
    tmp_path, start_upstream, start_gateway, page
):
    gw, tool, admin = await desk(tmp_path, start_upstream, start_gateway)
    action_id = await park(gw, {"amount": 500, "currency": "EUR"})
    await log_in(page, admin)
    await page.goto(f"{admin}/ui/actions/{action_id}")
    await page.locator("h1").click()
    await page.keyboard.press("d")  # no comment: the focus goes to the comment field
    assert await page.evaluate("document.activeElement.id") == "comment"
    assert page.dialogs == []  # type: ignore[attr-defined]
    await page.click("#deny")  # the browser holds the empty form back
    assert await page.evaluate("document.getElementById('comment').validity.valueMissing")
    # Past the browser's check: the server refuses it too, and says why.
    await page.evaluate("document.getElementById('comment').required = false")
    await page.fill("#comment", "   ")
    async with page.expect_response(f"{admin}/ui/actions/{action_id}/deny") as posted:
        await page.click("#deny")
    assert (await posted.value).status == 400
    assert "a comment is required to deny" in await page.locator(".notice").inner_text()
    assert (await gw.services.actions.get(action_id)).state == "pending"

    await page.fill("#comment", "the order was already refunded")
    await page.locator("h1").click()
    page.accept_dialogs = True  # type: ignore[attr-defined]
    await page.keyboard.press("d")
    await page.wait_for_selector("#state.denied")
    assert page.dialogs == ["deny this action?"]  # type: ignore[attr-defined]
    assert "the order was already refunded" in await page.locator("#approvals").inner_text()
    assert tool.calls == []


async def test_agent_text_in_every_field_stays_inert_text(
    tmp_path, start_upstream, start_gateway, page
):
    gw, tool, admin = await desk(tmp_path, start_upstream, start_gateway)
    body = {
        "amount": 250,
        "currency": XSS,  # into the summary, a key field and the body tree
        "order": XSS,
        "note": XSS,  # into the policy's reason
        XSS: "a key",  # a body key
        "nested": {XSS: [XSS]},
    }
    first = await park(
        gw,
        body,
        path="/refunds/%3Cscript%3Ewindow.__xss=3%3C-script%3E",
        headers={"X-Note": XSS, "X-Agent-Model": XSS, "X-Agent-Session": "javascript:alert(1)"},
    )
    resp = await gw.admin.post(
        f"/api/v1/actions/{first}/deny", headers=approver_headers("bob"), json={"comment": XSS}
    )
    assert resp.status == 200
    second = await park(gw, body, path="/refunds/<b>bold</b>")
    raw = await park(gw, XSS.encode(), "/upload", headers={"Content-Type": "text/html"})
    await log_in(page, admin)
    await no_script_ran(page)
    queue = await page.locator("main").inner_text()
    assert f"refund 250 {XSS} · order <script>" in queue  # the summary (cut), as text
    for action_id in (first, second, raw):
        await page.goto(f"{admin}/ui/actions/{action_id}")
        for details in await page.locator("main details").all():
            await details.evaluate("d => d.open = true")
        text = await page.locator("main").inner_text()
        assert XSS in text, action_id
        await no_script_ran(page)
        assert await page.locator("a[href^='javascript']").count() == 0
    await page.goto(f"{admin}/ui/actions/{first}")
    text = await page.locator("main").inner_text()
    assert "<script>window.__xss=3<-script>" in text  # the path
    assert f"the agent says: {XSS}" in text  # the reason
    assert "deny by bob" in text and XSS in await page.locator("#approvals").inner_text()
    assert "javascript:alert(1)" in text
    await page.goto(f"{admin}/ui/actions/{second}")
    assert XSS in await page.locator("#earlier").inner_text()  # the comment, again
    await no_script_ran(page)
    assert tool.calls == []


async def test_the_rows_update_live_and_a_half_typed_comment_stays(
    tmp_path, start_upstream, start_gateway, page
):
    gw, _, admin = await desk(tmp_path, start_upstream, start_gateway)
    action_id = await park(gw, {"amount": 250, "currency": "EUR", "order": "A1"})
    await log_in(page, admin)
    await page.goto(f"{admin}/ui/actions/{action_id}")
    await page.evaluate("window.__same_page = true")
    await page.fill("#comment", "checking the ticket, the customer says")
    assert "Nothing else waits" in await page.locator("#queue").inner_text()

    await park(gw, {"amount": 990, "currency": "EUR", "order": "B2", "risk": "critical"})
    await page.wait_for_selector("#queue >> text=refund 990 EUR · order B2", timeout=15_000)
    assert await page.evaluate("window.__same_page === true")  # no reload
    assert await page.input_value("#comment") == "checking the ticket, the customer says"
    assert await page.evaluate("document.activeElement.id") == "comment"
    status = "Pending actions updated: 1 shown of 2 waiting"  # for screen readers
    assert await page.locator("#live-status").text_content() == status

    # On the queue page, a focused row keeps the focus while new rows come in above it.
    await page.goto(f"{admin}/ui/")
    await page.evaluate("window.__same_page = true")
    await page.focus(f"#link-{action_id}")
    await park(gw, {"amount": 5000, "currency": "EUR", "order": "C3", "risk": "critical"})
    await page.wait_for_selector("#queue >> text=order C3", timeout=15_000)
    assert await page.evaluate("window.__same_page === true")
    assert await page.evaluate("document.activeElement.id") == f"link-{action_id}"
    assert (await headlines(page))[0] == "bot → echo: refund 5000 EUR · order C3"


async def test_axe_finds_nothing_serious_and_it_fits_a_phone(
    tmp_path, start_upstream, start_gateway, page
):
    gw, _, admin = await desk(tmp_path, start_upstream, start_gateway)
    done = await park(gw, {"amount": 130, "currency": "EUR", "order": "A0", "risk": "low"})
    resp = await gw.admin.post(
        f"/api/v1/actions/{done}/approve", headers=approver_headers("bob"), json={}
    )
    assert resp.status == 200
    await park(gw, {"amount": 900, "currency": "EUR", "order": "C1", "risk": "critical"})
    await park(gw, {"amount": 300, "currency": "EUR", "order": "H2"}, tool="ledger")
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(0x80, 0xA8))  # not UTF-8
    binary = await park(gw, png, "/upload", headers={"Content-Type": "image/png"})
    action_id = await park(
        gw,
        {
            "amount": 250,
            "currency": "EUR",
            "order": "A1",
            "customer": {"id": "c_9", "name": "Ada Lovelace", "tier": "gold"},
            "reason_code": "damaged_on_arrival",
            "note": "customer sent photos",
        },
        headers={"Prefer": "wait=0"},
    )
    await log_in(page, admin)
    pages = {"queue": f"{admin}/ui/", "action": f"{admin}/ui/actions/{action_id}"}
    pages["decided"] = f"{admin}/ui/actions/{done}"
    pages["binary"] = f"{admin}/ui/actions/{binary}"
    for name, url in pages.items():
        await page.goto(url)
        assert await serious_violations(page) == [], name
        for details in await page.locator("main details").all():
            await details.evaluate("d => d.open = true")
        assert await serious_violations(page) == [], f"{name}, everything unfolded"
    await page.goto(pages["binary"])
    body = await page.locator("#body").inner_text()
    assert "48 bytes, not text" in body
    assert "00000000  89 50 4e 47 0d 0a 1a 0a 80 81 82 83 84 85 86 87" in body
    await page.goto(pages["queue"])
    await screenshot(page, "queue")
    await page.goto(pages["action"])
    await screenshot(page, "action")

    await page.set_viewport_size({"width": 375, "height": 740})
    for name, url in pages.items():
        await page.goto(url)
        wide = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert wide <= 0, f"{name} scrolls sideways by {wide}px on a phone"
        assert await serious_violations(page) == [], f"{name} on a phone"
    await screenshot(page, "action-phone")
    await page.goto(pages["queue"])
    await screenshot(page, "queue-phone")
    # The decide buttons are reachable with the keyboard, right after the comment.
    await page.goto(pages["action"])
    await page.focus("#comment")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "approve"
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "deny"


async def test_the_axe_check_does_catch_problems(page):
    """The check above is not vacuous: axe runs, and reports what it should."""
    await page.set_content(
        '<!doctype html><html lang="en"><head><title>t</title></head><body><main>'
        '<select><option>x</option></select><img src="data:,">'
        '<p style="color:#ccc;background:#fff">faint</p></main></body></html>'
    )
    found = {line.split(" ", 1)[0] for line in await serious_violations(page)}
    assert {"select-name", "image-alt", "color-contrast"} <= found
