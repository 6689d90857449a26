"""`tools[].deadline_s`: the longest one call may take, its answer streamed included
(issue 14, 13a). An answer that keeps sending (SSE keep-alives, an endless chunked body)
never trips the idle `timeout_s`; the deadline cuts it. Before the answer has started it is
a 504 `upstream_timeout`; the event streams an MCP server keeps open (GET,
`subscriptions/listen`) are exempt (see docs/configuration.md)."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
from aiohttp import web

from tests.support.approvals import approval_config, approver_headers
from tests.support.gateway import auth
from tests.support.mcp import mcp_app, mcp_config, post, rpc, start_with

KEEP_ALIVE_S = 0.2


async def endless(request: web.Request) -> web.StreamResponse:
    """Answers with an event stream (or a chunked body) that never ends."""
    sse = request.path.endswith("/mcp")
    if request.can_read_body:
        await request.read()
    content_type = "text/event-stream" if sse else "application/octet-stream"
    stream = web.StreamResponse(headers={"Content-Type": content_type})
    await stream.prepare(request)
    while True:
        await stream.write(b": keep-alive\n\n" if sse else b"more\n")
        await asyncio.sleep(KEEP_ALIVE_S)


async def read_until_cut(resp: aiohttp.ClientResponse) -> bytes:
    seen = b""
    async with asyncio.timeout(15):  # a guard, far above the deadline
        with pytest.raises(aiohttp.ClientPayloadError):
            async for chunk in resp.content.iter_any():
                seen += chunk
    return seen


async def test_an_endless_event_stream_answering_a_tool_call_is_cut_at_the_deadline(
    tmp_path, start_upstream, start_gateway, caplog
):
    gw = await start_with(
        tmp_path, start_upstream, start_gateway, endless, timeout_s=0.5, deadline_s=1
    )
    caplog.set_level(logging.WARNING, logger="gateway.pipeline.forward")
    resp = await post(gw, rpc("tools/call", {"name": "add", "arguments": {}}))
    assert resp.status == 200
    seen = await read_until_cut(resp)
    assert seen.startswith(b": keep-alive\n\n")
    assert any("deadline" in record.getMessage() for record in caplog.records)


async def test_an_endless_http_answer_is_cut_at_the_deadline(start_upstream, start_gateway):
    app = web.Application()
    app.router.add_get("/feed", endless)
    gw = await start_gateway(await start_upstream(app), tool={"timeout_s": 0.5, "deadline_s": 1})
    resp = await gw.get("/tools/echo/feed", headers=auth())
    assert resp.status == 200
    assert (await read_until_cut(resp)).startswith(b"more\n")


async def test_no_answer_by_the_deadline_is_a_504(start_upstream, start_gateway):
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(10)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/slow", slow)
    gw = await start_gateway(await start_upstream(app), tool={"timeout_s": 5, "deadline_s": 0.5})
    resp = await gw.get("/tools/echo/slow", headers=auth())
    assert resp.status == 504
    error = (await resp.json())["error"]
    assert error["code"] == "upstream_timeout"
    assert "deadline" in error["message"] and "0.5s" in error["message"]


async def test_a_tool_list_still_arriving_at_the_deadline_is_a_clean_error(
    tmp_path, start_upstream, start_gateway
):
    """A JSON tools/list is read whole before the answer starts: still within the call."""

    async def trickle(request: web.Request) -> web.StreamResponse:
        await request.read()
        stream = web.StreamResponse(headers={"Content-Type": "application/json"})
        await stream.prepare(request)
        while True:
            await stream.write(b" ")
            await asyncio.sleep(KEEP_ALIVE_S)

    gw = await start_with(tmp_path, start_upstream, start_gateway, trickle, deadline_s=1)
    async with asyncio.timeout(15):  # a guard, far above the deadline
        answer = await (await post(gw, rpc("tools/list", id=5))).json()
    assert answer["id"] == 5
    assert answer["error"]["data"]["error"]["code"] == "upstream_timeout"


@pytest.mark.parametrize("stream", ["GET", "subscriptions/listen"])
async def test_the_event_streams_an_mcp_server_keeps_open_have_no_deadline(
    tmp_path, start_upstream, start_gateway, stream
):
    url = await start_upstream(mcp_app(endless))
    config = mcp_config(tmp_path, url + "/mcp", timeout_s=0.5, deadline_s=0.5)
    gw = await start_gateway(config=config)
    if stream == "GET":
        resp = await gw.get("/tools/mcp", headers=auth())
    else:
        resp = await post(gw, rpc("subscriptions/listen", {}, id=1))
    assert resp.status == 200
    # Eight keep-alives take at least 7 x 0.2 s: well past the deadline of 0.5 s.
    async with asyncio.timeout(15):
        for _ in range(8):
            assert await resp.content.readuntil(b"\n\n") == b": keep-alive\n\n"
    resp.close()


async def test_an_approved_action_whose_answer_never_ends_fails_at_the_deadline(
    tmp_path, start_upstream, start_gateway
):
    """The executor of an approved action keeps the deadline too: it would otherwise stay
    `executing` (its lease renewed) for as long as the tool keeps the answer alive."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", endless)
    config = approval_config(tmp_path, await start_upstream(app))
    tool = config.tools[0].model_copy(update={"deadline_s": 1})
    gw = await start_gateway(config=config.model_copy(update={"tools": (tool,)}))
    parked = await gw.post("/tools/echo/refunds", headers=auth(), json={})
    assert parked.status == 202
    action_id = (await parked.json())["action_id"]
    approved = await gw.admin.post(
        f"/api/v1/actions/{action_id}/approve", headers=approver_headers("alice"), json={}
    )
    assert approved.status == 200
    async with asyncio.timeout(15):  # a guard, far above the deadline
        while (action := await gw.services.actions.get(action_id)).state != "failed":
            await asyncio.sleep(0.1)
    result = action.document["result"]
    assert result["error"] == "upstream_timeout"
    assert "deadline of 1s" in result["message"]
