"""What the approvers' page computes from actions: headlines, the queue's order and
filters, relative times, body paths, hex previews, what a click does; and /ui/pending."""

from __future__ import annotations

import base64
import time
from typing import Any

from gateway.admin import desk
from gateway.approvals.headline import headline
from gateway.audit.events import iso
from tests.support.approvals import Tool, approval_config, log_in
from tests.support.gateway import auth


def action(
    created: float = 0,
    risk: Any = None,
    *,
    agent: str = "support-bot",
    tool: str = "payments",
    roles: tuple[str, ...] = ("finance",),
    body: Any = None,
    summary: str | None = None,
    **more: Any,
) -> dict[str, Any]:
    tags = {} if risk is None else {"risk": risk}
    return {
        "id": f"a{created:g}-{risk}",
        "agent": agent,
        "tool": tool,
        "created_at": iso(1_800_000_000 + created),
        "request": {"method": "POST", "path": "/v1/refunds", "body": body},
        "decision": {"tags": tags, "roles": list(roles), "min_approvals": 1, "summary": summary},
        "approvals": [],
        **more,
    }


def test_a_headline_is_the_call_and_its_top_level_fields_or_the_policys_summary() -> None:
    body = {"amount": 250, "currency": "EUR", "order": "A1", "lines": [1], "meta": {"a": 1}}
    assert headline(action(body=body)) == (
        "support-bot → payments: POST /v1/refunds · amount 250 · currency EUR · order A1"
    )
    assert (
        headline(action(body=body), with_body=False) == "support-bot → payments: POST /v1/refunds"
    )
    summary = "refund 250 EUR · order A1"
    assert headline(action(body=body, summary=summary)) == f"support-bot → payments: {summary}"
    assert headline(action(body={"ok": True, "n": None})) == (
        "support-bot → payments: POST /v1/refunds · ok true · n null"
    )


def test_a_headline_is_one_bounded_line() -> None:
    body = {"note": "line one\nline two " + "x" * 100, "more": "y" * 300, "then": "z" * 50}
    line = headline(action(body=body))
    assert "\n" not in line and len(line) == 160 and line.endswith("…")
    assert f"note line one line two {'x' * 21}… · more" in line  # each value cut at 40


def test_the_queue_is_riskiest_first_then_newest() -> None:
    actions = [
        action(1, "low"),
        action(2, None),
        action(3, "high"),
        action(4, "critical"),
        action(5, "high"),
        action(6, "whatever"),
        action(7, {"not": "a string"}),
        action(8, "medium"),
    ]
    ordered = [a["id"] for a in desk.queue_order(actions)]
    assert ordered == [
        "a4-critical",
        "a5-high",
        "a3-high",
        "a8-medium",
        "a1-low",
        "a7-{'not': 'a string'}",
        "a6-whatever",
        "a2-None",
    ]


def test_filters_match_tool_agent_role_and_risk_and_empty_ones_match_all() -> None:
    one = action(1, "high", agent="bot", tool="ledger", roles=("finance", "ops"))
    assert desk.matches(one, {"tool": "", "agent": "", "role": "", "risk": ""})
    assert desk.matches(one, {"tool": "ledger", "agent": "bot", "role": "ops", "risk": "high"})
    for name, other in (("tool", "echo"), ("agent", "x"), ("role", "legal"), ("risk", "low")):
        assert not desk.matches(one, {name: other}), name
    assert desk.choices([one, action(2, "low")]) == {
        "tool": ["ledger", "payments"],
        "agent": ["bot", "support-bot"],
        "role": ["finance", "ops"],
        "risk": ["high", "low"],
    }


def test_moments_are_relative_with_the_absolute_time_for_a_hover() -> None:
    soon = desk.moment(iso(time.time() + 3 * 3600 + 125))
    assert soon is not None and soon.relative == "in 3h 02m"
    past = desk.moment(iso(time.time() - 65))
    assert past is not None and past.relative in ("1m 05s ago", "1m 06s ago")
    fixed = desk.moment("2026-12-04T02:30:05.123456Z")
    assert fixed is not None and fixed.absolute == "2026-12-04 02:30:05 UTC"
    assert desk.moment(None) is None


def test_body_paths_and_badges() -> None:
    body = {"order": {"id": "A1", "lines": [{"sku": "X"}]}, "a.b": 1}
    found = desk.key_fields({"body": body}, ["order.id", "order.lines.0.sku", "order.x", "a.b"])
    assert [(f["path"], f["absent"], f["value"]) for f in found] == [
        ("order.id", False, "A1"),
        ("order.lines.0.sku", False, "X"),
        ("order.x", True, None),
        ("a.b", True, None),  # a key with a dot in it cannot be named by a path
    ]
    assert desk.key_fields({"body": None}, ["amount"])[0]["absent"]
    tags = {"money": True, "amount": 250, "risk": "high", "off": False, "note": None}
    assert desk.badges(tags) == ["risk: high", "money", "amount: 250"]


def test_a_hex_preview_shows_the_first_bytes_and_the_size() -> None:
    raw = bytes(range(256)) * 2
    preview = desk.hex_preview(base64.b64encode(raw).decode())
    assert preview["size"] == 512 and preview["cut"] is True
    lines = preview["hex"].splitlines()
    assert len(lines) == 16
    assert lines[0] == "00000000  00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f"
    assert desk.as_json('{"a": [1]}') == '{\n  "a": [\n    1\n  ]\n}'
    assert desk.as_json("plain") is None and desk.as_json("12") is None


def test_what_approving_will_do() -> None:
    waiting = action(held_until=iso(time.time() + 30))
    assert desk.effect(waiting) == (
        "Approving sends this POST to payments once; the agent is waiting (its call is held "
        f"open until {desk.moment(waiting['held_until']).absolute})."  # type: ignore[union-attr]
    )
    gone = action(held_until=iso(time.time() - 1))
    assert desk.effect(gone).endswith("once; the agent will get the result when it asks again.")
    assert desk.effect(action(held_until=None)) == desk.effect(gone)
    two = action(held_until=None)
    two["decision"]["min_approvals"] = 3
    two["approvals"] = [{"approver": "bob", "verdict": "approve"}]
    assert desk.effect(two) == (
        "Approving adds your approval; 1 more approval will be needed before the call is sent."
    )


async def test_the_live_rows_need_a_session_and_follow_the_filters(
    tmp_path, start_upstream, start_gateway
):
    url = await start_upstream(Tool().app())
    gw = await start_gateway(config=approval_config(tmp_path, url))
    refund = await gw.post("/tools/echo/refunds", headers=auth(), json={"amount": 1})
    transfer = await gw.post("/tools/echo/transfers", headers=auth(), json={"amount": 2})
    refund_id = (await refund.json())["action_id"]
    transfer_id = (await transfer.json())["action_id"]
    assert (await gw.admin.get("/ui/pending")).status == 401
    await log_in(gw.admin)
    rows = await gw.admin.get("/ui/pending")
    assert rows.status == 200
    html = await rows.text()
    assert "<html" not in html  # rows, not a page
    assert html.index(refund_id) < html.index(transfer_id)  # risk high before no risk
    only_high = await (await gw.admin.get("/ui/pending?risk=high")).text()
    assert refund_id in only_high and transfer_id not in only_high
    assert "1 shown of 2 waiting" in only_high
    without = await (await gw.admin.get(f"/ui/pending?exclude={refund_id}")).text()
    assert refund_id not in without and transfer_id in without


async def test_big_bodies_are_folded_and_the_biggest_are_not_drawn_as_trees(
    tmp_path, start_upstream, start_gateway
):
    url = await start_upstream(Tool().app())
    gw = await start_gateway(config=approval_config(tmp_path, url))
    await log_in(gw.admin)
    nested = {"items": {f"k{i}": i for i in range(13)}, "few": {"a": 1}}
    resp = await gw.post("/tools/echo/refunds", headers=auth(), json=nested)
    page = await (await gw.admin.get(f"/ui/actions/{(await resp.json())['action_id']}")).text()
    assert page.count("<summary>13 keys</summary>") == 1  # "few" is not folded
    huge = {"blob": "x" * (desk.TREE_MAX_BYTES + 1)}
    resp = await gw.post("/tools/echo/refunds", headers=auth(), json=huge)
    page = await (await gw.admin.get(f"/ui/actions/{(await resp.json())['action_id']}")).text()
    assert "bytes of JSON: too large to show as a tree" in page
    assert '<dl class="tree">' not in page
    assert "&#34;blob&#34;: &#34;xxx" in page  # the folded JSON, escaped
