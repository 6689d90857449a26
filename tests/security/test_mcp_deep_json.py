"""JSON from an MCP server nested deeper than `protection.max_json_depth` (issue 14,
finding 9): Python's parser recurses, so a 20,000-deep tool schema crashed the call with a
500. What the gateway cannot read is never passed to the agent unfiltered: a JSON answer
becomes a clean JSON-RPC error naming the limit, an event of a stream answering a request
ends that stream with one (see docs/mcp.md)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from tests.support.approvals import decide, ended
from tests.support.gateway import OTHER_TOKEN, auth
from tests.support.mcp import Streams, post, rpc, start_streams, start_with

DEPTH = 20_000


def deep_schema() -> str:
    """A JSON object nested DEPTH deep, as text (json.dumps would recurse itself)."""
    return '{"a":' * DEPTH + "1" + "}" * DEPTH


def answer(id: int, result: str) -> str:
    return f'{{"jsonrpc": "2.0", "id": {id}, "result": {result}}}'


def deep_list(id: int) -> str:
    return answer(id, '{"tools": [{"name": "add", "inputSchema": ' + deep_schema() + "}]}")


def assert_clean_error(refused: dict[str, Any], id: int) -> None:
    assert refused["id"] == id
    assert refused["error"]["data"]["error"]["code"] == "upstream_unreachable"
    assert "64" in refused["error"]["message"], "the message names the limit"
    assert "add" not in json.dumps(refused)


async def test_a_tool_list_nested_too_deep_is_a_clean_error(
    tmp_path, start_upstream, start_gateway
):
    async def deep(request: web.Request) -> web.Response:
        return web.Response(text=deep_list(5), content_type="application/json")

    gw = await start_with(tmp_path, start_upstream, start_gateway, deep)
    resp = await post(gw, rpc("tools/list", id=5), token_headers=auth(OTHER_TOKEN))
    assert resp.status == 200
    assert_clean_error(await resp.json(), 5)


async def test_a_tool_list_event_nested_too_deep_ends_the_stream_with_a_clean_error(
    tmp_path, start_upstream, start_gateway
):
    progress = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}
    streams = Streams(
        {
            "tools/list": [
                f"event: message\ndata: {json.dumps(progress)}\n\n",
                f"event: message\ndata: {deep_list(5)}\n\n",
            ]
        }
    )
    gw = await start_streams(tmp_path, start_upstream, start_gateway, streams)
    resp = await post(gw, rpc("tools/list", id=5), token_headers=auth(OTHER_TOKEN))
    events = (await resp.text()).strip().split("\n\n")  # a whole stream, not a cut one
    assert json.loads(events[0].split("data: ", 1)[1]) == progress
    assert len(events) == 2
    assert_clean_error(json.loads(events[1].split("data: ", 1)[1]), 5)


async def test_a_deep_event_on_the_get_stream_cuts_it(tmp_path, start_upstream, start_gateway):
    """The GET stream answers no request: what cannot be checked can only be cut."""
    streams = Streams({"GET": [": keep-alive\n\n", f"data: {deep_list(9)}\n\n"]})
    gw = await start_streams(tmp_path, start_upstream, start_gateway, streams)
    resp = await gw.get("/tools/mcp", headers=auth(OTHER_TOKEN))
    seen = b""
    try:
        async for chunk in resp.content.iter_any():
            seen += chunk
    except Exception:  # the cut: aiohttp.ClientPayloadError
        pass
    assert b'"add"' not in seen
    assert seen.startswith(b": keep-alive")


async def test_a_deep_answer_to_a_tool_call_stream_is_a_clean_error(
    tmp_path, start_upstream, start_gateway
):
    result = '{"content": [], "structuredContent": ' + deep_schema() + "}"
    streams = Streams({"tools/call": [f"event: message\ndata: {answer(3, result)}\n\n"]})
    gw = await start_streams(tmp_path, start_upstream, start_gateway, streams)
    resp = await post(gw, rpc("tools/call", {"name": "add", "arguments": {}}, id=3))
    events = (await resp.text()).strip().split("\n\n")
    assert len(events) == 1
    refused = json.loads(events[0].split("data: ", 1)[1])
    assert refused["id"] == 3
    assert refused["result"]["isError"] is True  # a tool error the model reads
    error = json.loads(refused["result"]["content"][0]["text"])["error"]
    assert error["code"] == "upstream_unreachable"
    assert "64" in error["message"]


async def test_an_approved_calls_answer_nested_too_deep_is_a_clean_error(
    tmp_path, start_upstream, start_gateway
):
    """The outcome of an approved call is read from the server's stored answer."""

    async def deep(request: web.Request) -> web.Response:
        body = await request.json()
        text = answer(body["id"], deep_schema())
        return web.Response(text=text, content_type="application/json")

    gw = await start_with(tmp_path, start_upstream, start_gateway, deep)
    call = rpc("tools/call", {"name": "refund", "arguments": {"amount": 5}}, id=7)
    first = await (await post(gw, call)).json()
    action_id = json.loads(first["result"]["content"][0]["text"])["action_id"]
    await decide(gw, action_id)
    await ended(gw, action_id)
    resp = await post(gw, call)
    assert resp.status == 200
    refused = await resp.json()
    assert refused["id"] == 7
    assert refused["result"]["isError"] is True
    error = json.loads(refused["result"]["content"][0]["text"])["error"]
    assert "64" in error["message"] and action_id in error["message"]
