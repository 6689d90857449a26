"""A tools/call result through the real MCP SDK server, both protocol eras, JSON and SSE:
capped at the tool's max_response_bytes (a result the model reads, never a cut stream)
and scrubbed of the tool's credential (docs/answers-and-pins.md)."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from tests.support.audit import audit_source, wait_for_records
from tests.support.gateway import TOOL_SECRET
from tests.support.mcp import mcp_config, post, rpc, start_with
from tests.support.mcp_sdk import SERVERS, client, sdk_server

ALLOW_CALLERS = """package gateway

import rego.v1

default decision := {"allow": false, "reason": "not a caller"}

decision := {"allow": true, "reason": "caller"} if "caller" in input.agent.roles
"""


@pytest.mark.parametrize("server", list(SERVERS))
async def test_an_echoed_credential_and_a_result_over_the_cap(tmp_path, start_gateway, server):
    flags, mode, _ = SERVERS[server]
    async with sdk_server([*flags, "--answers"]) as upstream:
        config = mcp_config(tmp_path, upstream, max_response_bytes=4000)
        (config.policy.path / "gateway.rego").write_text(ALLOW_CALLERS)
        gw = await start_gateway(config=config)
        async with client(str(gw.make_url("/tools/mcp")), mode) as mcp:
            whoami = await mcp.call_tool("whoami", {})
            assert not whoami.is_error
            assert whoami.content[0].text == "you called with [redacted]"

            small = await mcp.call_tool("big", {"size": 1000})
            assert not small.is_error and small.content[0].text == "b" * 1000

            large = await mcp.call_tool("big", {"size": 20_000})
            assert large.is_error is True
            error = json.loads(large.content[0].text)["error"]
            assert error["code"] == "upstream_response_too_large"
            assert "max_response_bytes (4000)" in error["message"]

            again = await mcp.call_tool("big", {"size": 10})  # the session goes on
            assert again.content[0].text == "b" * 10

    records = await wait_for_records(
        audit_source(gw),
        lambda rs: sum(r["kind"] == "outcome" for r in rs) >= 4,
    )
    outcomes = [
        r
        for r in records
        if r["kind"] == "outcome" and r.get("mcp", {}).get("method") == "tools/call"
    ]
    assert [r["error"] for r in outcomes].count("upstream_response_too_large") == 1
    # Once in the text content, once in the structured content.
    assert any(r.get("redacted") == {"credential": 2} for r in outcomes)
    assert all(TOOL_SECRET not in json.dumps(r) for r in records)


def _event(message: dict) -> bytes:
    return f"event: message\ndata: {json.dumps(message)}\n\n".encode()


PROGRESS = _event(
    {
        "jsonrpc": "2.0",
        "method": "notifications/progress",
        "params": {"progressToken": 1, "progress": 1},
    }
)


def scripted(*pieces: bytes):
    """An MCP server answering every POST with an event stream written in `pieces`."""

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        for piece in pieces:
            await stream.write(piece)
            await asyncio.sleep(0.05)
        await stream.write_eof()
        return stream

    return handle


async def test_a_secret_split_across_chunks_of_an_event_stream(
    tmp_path, start_upstream, start_gateway
):
    result = _event(
        {
            "jsonrpc": "2.0",
            "id": 7,
            "result": {"content": [{"type": "text", "text": f"key {TOOL_SECRET}"}]},
        }
    )
    cut = result.index(TOOL_SECRET.encode()) + 4
    gw = await start_with(
        tmp_path, start_upstream, start_gateway, scripted(PROGRESS, result[:cut], result[cut:])
    )
    resp = await post(gw, rpc("tools/call", {"name": "add", "arguments": {}}, id=7))
    body = await resp.read()
    assert TOOL_SECRET.encode() not in body
    events = body.split(b"\n\n")
    assert events[0] + b"\n\n" == PROGRESS
    answer = json.loads(events[1].split(b"data: ", 1)[1])
    assert answer["result"]["content"][0]["text"] == "key [redacted]"


async def test_an_event_stream_past_the_cap_ends_with_a_refusal(
    tmp_path, start_upstream, start_gateway
):
    large = _event(
        {"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": "x" * 5000}]}}
    )
    handler = scripted(PROGRESS, large[:2000], large[2000:])
    gw = await start_with(tmp_path, start_upstream, start_gateway, handler, max_response_bytes=1000)
    resp = await post(gw, rpc("tools/call", {"name": "add", "arguments": {}}, id=7))
    body = await resp.read()  # ends cleanly: the last event answers the call
    events = [e for e in body.split(b"\n\n") if e]
    assert events[0] + b"\n\n" == PROGRESS
    assert len(events) == 2
    answer = json.loads(events[1].split(b"data: ", 1)[1])
    assert answer["id"] == 7 and answer["result"]["isError"] is True
    error = json.loads(answer["result"]["content"][0]["text"])["error"]
    assert error["code"] == "upstream_response_too_large"
    records = await wait_for_records(
        audit_source(gw), lambda rs: any(r["kind"] == "outcome" for r in rs)
    )
    outcome = next(r for r in records if r["kind"] == "outcome")
    assert outcome["error"] == "upstream_response_too_large"
