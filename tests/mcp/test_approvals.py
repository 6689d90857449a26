"""A tools/call that needs approval, through the official SDK on both sides: held until
approved and executed (progress keeping the stream alive), or answered at once and matched
again by the repeat of the same call; denials and repeats after an outcome."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.support.approvals import decide, ended, pending_action
from tests.support.mcp import mcp_config
from tests.support.mcp_sdk import SERVERS, client, sdk_server

REFUND = {"amount": 12.5, "currency": "eur"}


@pytest.mark.parametrize("server", ["handshake-sse", "2026-sse", "2026-json"])
async def test_a_held_call_gets_the_real_result_once_approved(tmp_path, start_gateway, server):
    flags, mode, _version = SERVERS[server]
    async with sdk_server(flags) as upstream:
        gw = await start_gateway(config=mcp_config(tmp_path, upstream, approval_wait_s=20))
        url = str(gw.make_url("/tools/mcp"))
        async with client(url, mode) as mcp:
            seen: list[str] = []

            async def progress(done: float, total: float | None, message: str | None) -> None:
                seen.append(message or "")

            async def approve_when_parked() -> None:
                await decide(gw, (await pending_action(gw))["id"])

            result, _ = await asyncio.gather(
                mcp.call_tool("refund", REFUND, progress_callback=progress), approve_when_parked()
            )
            assert not result.is_error, result
            assert result.content[0].text == "refunded 12.50 EUR"
            assert seen and all(m.startswith("waiting for approval of action") for m in seen)


@pytest.mark.parametrize("server", ["handshake-sse", "2026-json"])
async def test_the_repeat_of_a_parked_call_gets_its_outcome(tmp_path, start_gateway, server):
    flags, mode, _version = SERVERS[server]
    async with sdk_server(flags) as upstream:
        gw = await start_gateway(config=mcp_config(tmp_path, upstream))
        url = str(gw.make_url("/tools/mcp"))
        async with client(url, mode) as mcp:
            first = await mcp.call_tool("refund", REFUND)
            assert first.is_error is True
            said = json.loads(first.content[0].text)
            assert said["status"] == "pending_approval"
            assert "NOT been executed" in said["message"]
            assert "same arguments again" in said["message"]

            again = await mcp.call_tool("refund", REFUND)  # still pending: the same action
            assert json.loads(again.content[0].text)["action_id"] == said["action_id"]
            other = await mcp.call_tool("refund", {**REFUND, "amount": 13})
            assert json.loads(other.content[0].text)["action_id"] != said["action_id"]

            await decide(gw, said["action_id"])
            assert (await ended(gw, said["action_id"]))["state"] == "succeeded"
            outcome = await mcp.call_tool("refund", REFUND)
            assert not outcome.is_error
            assert outcome.content[0].text == "refunded 12.50 EUR"

            # The outcome was given: the same call again is a new call, parked anew.
            anew = await mcp.call_tool("refund", REFUND)
            assert json.loads(anew.content[0].text)["action_id"] != said["action_id"]


async def test_a_denied_parked_call_says_so_on_its_repeat(tmp_path, start_gateway):
    flags, mode, _version = SERVERS["2026-json"]
    async with sdk_server(flags) as upstream:
        gw = await start_gateway(config=mcp_config(tmp_path, upstream))
        url = str(gw.make_url("/tools/mcp"))
        async with client(url, mode) as mcp:
            first = json.loads((await mcp.call_tool("refund", REFUND)).content[0].text)
            await decide(gw, first["action_id"], "deny")
            denied = await mcp.call_tool("refund", REFUND)
            assert denied.is_error is True
            error = json.loads(denied.content[0].text)["error"]
            assert error["code"] == "policy_denied"
            assert "an approver denied this call" in error["message"]
            assert "checked the ticket" in error["message"]


async def test_a_repeat_long_after_the_outcome_is_a_new_call(tmp_path, start_gateway):
    flags, mode, _version = SERVERS["2026-json"]
    async with sdk_server(flags) as upstream:
        config = mcp_config(tmp_path, upstream)
        config = config.model_copy(
            update={"approvals": config.approvals.model_copy(update={"default_ttl_s": 1})}
        )
        gw = await start_gateway(config=config)
        url = str(gw.make_url("/tools/mcp"))
        async with client(url, mode) as mcp:
            first = json.loads((await mcp.call_tool("refund", REFUND)).content[0].text)
            assert (await ended(gw, first["action_id"]))["state"] == "expired"
            await asyncio.sleep(1.2)  # the outcome waited for its repeat as long as it may
            later = json.loads((await mcp.call_tool("refund", REFUND)).content[0].text)
            assert later["status"] == "pending_approval"
            assert later["action_id"] != first["action_id"]
        metrics = await (await gw.admin.get("/metrics")).text()
        assert (
            'callgate_mcp_requests_total{method="tools/call",outcome="pending_approval",tool="mcp"} 2.0'
            in metrics
        )
