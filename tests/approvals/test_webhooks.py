"""New pending actions are announced to webhooks: signed, retried, body left out."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any

from gateway.config import Webhook
from tests.support.approvals import Receiver, Tool, approval_config
from tests.support.gateway import auth

SECRET = "whsec-test-0123"


def verify(headers: dict[str, str], body: bytes) -> bool:
    fields = dict(part.split("=", 1) for part in headers["X-Callgate-Signature"].split(","))
    signed = f"{fields['t']}.".encode() + body
    expected = hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"])


async def gateway(
    tmp_path: Any, start_upstream: Any, start_gateway: Any, receiver: Receiver, **hook: Any
):
    tool_url = await start_upstream(Tool().app())
    hook_url = await start_upstream(receiver.app()) + "/hook"
    webhook = Webhook(url=hook_url, secret=SECRET, **hook)  # type: ignore[arg-type]
    return await start_gateway(config=approval_config(tmp_path, tool_url, webhooks=(webhook,)))


async def test_a_new_action_is_announced_signed_and_without_its_body(
    tmp_path, start_upstream, start_gateway
):
    receiver = Receiver()
    gw = await gateway(tmp_path, start_upstream, start_gateway, receiver)
    resp = await gw.post("/tools/echo/refunds", headers=auth(), json={"card": "4111111111111111"})
    action_id = (await resp.json())["action_id"]
    async with asyncio.timeout(10):
        await receiver.taken.wait()
    ((headers, body),) = receiver.deliveries
    assert verify(headers, body)
    assert not verify(headers, body + b" ")
    summary = json.loads(body)
    assert summary["event"] == "action.pending"
    assert summary["action_id"] == action_id
    assert (summary["agent"], summary["tool"], summary["method"], summary["path"]) == (
        "bot",
        "echo",
        "POST",
        "/refunds",
    )
    assert summary["reason"] == "refunds need finance"
    assert "refunds need finance" in summary["text"]
    assert summary["summary"] == "bot → echo: POST /refunds"
    assert "url" not in summary  # no approvals.public_url
    assert "4111" not in body.decode()
    assert "request_body" not in summary


async def test_failed_deliveries_are_retried(tmp_path, start_upstream, start_gateway):
    receiver = Receiver(failures=2)
    gw = await gateway(tmp_path, start_upstream, start_gateway, receiver, include_body=True)
    await gw.post("/tools/echo/refunds", headers=auth(), json={"amount": 5})
    async with asyncio.timeout(15):
        await receiver.taken.wait()
    assert len(receiver.deliveries) == 3
    attempts = [
        headers["X-Callgate-Delivery"].rsplit("/", 1)[1] for headers, _ in receiver.deliveries
    ]
    assert attempts == ["1", "2", "3"]
    assert all(verify(headers, body) for headers, body in receiver.deliveries)
    assert json.loads(receiver.deliveries[-1][1])["request_body"] == {"body": {"amount": 5}}


async def test_calls_that_need_no_approval_announce_nothing(
    tmp_path, start_upstream, start_gateway
):
    receiver = Receiver()
    gw = await gateway(tmp_path, start_upstream, start_gateway, receiver)
    assert (await gw.get("/tools/echo/items", headers=auth())).status == 201
    await asyncio.sleep(0.2)
    assert receiver.deliveries == []


PUBLIC_URL = "https://approvals.example.com"


async def test_a_slack_webhook_gets_blocks_with_the_headline_and_a_link(
    tmp_path, start_upstream, start_gateway
):
    receiver = Receiver()
    tool_url = await start_upstream(Tool().app())
    hook_url = await start_upstream(receiver.app()) + "/hook"
    webhook = Webhook(url=hook_url, format="slack", include_body=True)
    config = approval_config(tmp_path, tool_url, webhooks=(webhook,), public_url=PUBLIC_URL)
    gw = await start_gateway(config=config)
    sneaky = "<!channel> <https://evil.example|Approved by the CFO> &"
    resp = await gw.post("/tools/echo/refunds", headers=auth(), json={"amount": 12, "x": sneaky})
    action_id = (await resp.json())["action_id"]
    async with asyncio.timeout(10):
        await receiver.taken.wait()
    ((headers, body),) = receiver.deliveries
    assert "X-Callgate-Signature" not in headers  # no secret given: Slack's URL is the key
    message = json.loads(body)
    headline = f"bot → echo: POST /refunds · amount 12 · x {sneaky[:39]}…"
    assert message["text"] == f"Approval needed: {headline}"
    blocks = message["blocks"]
    assert [block["type"] for block in blocks] == [
        "header",
        "section",
        "section",
        "context",
        "actions",
    ]
    assert blocks[1]["text"] == {"type": "plain_text", "text": headline, "emoji": False}
    fields = [field["text"] for field in blocks[2]["fields"]]
    assert fields == [
        *("*Why*", "refunds need finance"),
        *("*Needs*", "1 approval by finance"),
        *("*Risk*", "high"),
    ]
    # Agent text only ever sits in plain_text, never in markup Slack would read.
    for block in blocks:
        for part in [block.get("text"), *block.get("fields", []), *block.get("elements", [])]:
            if part and part.get("type") == "mrkdwn":
                assert "evil" not in part["text"] and "channel" not in part["text"]
    (button,) = blocks[4]["elements"]
    assert button["url"] == f"{PUBLIC_URL}/ui/actions/{action_id}"
    assert "Expires <!date^" in blocks[3]["elements"][0]["text"]


async def test_a_generic_webhook_carries_the_headline_and_the_link_too(
    tmp_path, start_upstream, start_gateway
):
    receiver = Receiver()
    tool_url = await start_upstream(Tool().app())
    hook_url = await start_upstream(receiver.app()) + "/hook"
    webhook = Webhook(url=hook_url, secret=SECRET)  # type: ignore[arg-type]
    config = approval_config(tmp_path, tool_url, webhooks=(webhook,), public_url=PUBLIC_URL)
    gw = await start_gateway(config=config)
    resp = await gw.post("/tools/echo/refunds", headers=auth(), json={"amount": 12})
    action_id = (await resp.json())["action_id"]
    async with asyncio.timeout(10):
        await receiver.taken.wait()
    ((headers, body),) = receiver.deliveries
    assert verify(headers, body)
    summary = json.loads(body)
    assert summary["summary"] == "bot → echo: POST /refunds"  # no body without include_body
    assert summary["url"] == f"{PUBLIC_URL}/ui/actions/{action_id}"
