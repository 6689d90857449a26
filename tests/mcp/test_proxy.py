"""MCP tools behind the gateway, on the wire: decisions on the JSON-RPC body, refusals the
model reads, tools/list filtered (JSON and SSE), batches and header mismatches refused,
headers both ways, and event streams closed upstream when the agent leaves.

The upstream here is a small aiohttp app speaking Streamable HTTP's framing; the official
SDK's client and server are in test_sdk.py."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support.approvals import approver_headers
from tests.support.audit import wait_for_records
from tests.support.gateway import AGENT_TOKEN, OTHER_TOKEN, auth
from tests.support.mcp import Streams, mcp_app, mcp_config, post, rpc, start_streams, start_with
from tests.support.process import Gateway, cli

TOOLS = [{"name": name, "inputSchema": {"type": "object"}} for name in ("add", "refund", "secret")]


class Server:
    """Answers like an MCP server: JSON, or SSE when `sse` is set."""

    def __init__(self, sse: bool = False) -> None:
        self.sse = sse
        self.seen: list[tuple[str, dict[str, str], Any]] = []
        self.stream_closed = asyncio.Event()

    def result_for(self, message: dict[str, Any]) -> dict[str, Any]:
        if message.get("method") == "tools/list":
            return {"tools": TOOLS, "cacheScope": "public"}
        if message.get("method") == "tools/call":
            return {"content": [{"type": "text", "text": "42"}], "isError": False}
        return {}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        self.seen.append((request.method, dict(request.headers), body))
        if request.method == "GET":
            stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await stream.prepare(request)
            try:
                await asyncio.sleep(3600)
            finally:
                self.stream_closed.set()
        if "id" not in body:
            return web.Response(status=202)
        answer = {"jsonrpc": "2.0", "id": body["id"], "result": self.result_for(body)}
        headers = {"Mcp-Session-Id": "s-1", "Cache-Control": "public, max-age=3600"}
        if not self.sse:
            return web.json_response(answer, headers=headers)
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream", **headers})
        await stream.prepare(request)
        progress = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}
        await stream.write(f"event: message\nid: 1\ndata: {json.dumps(progress)}\n\n".encode())
        await stream.write(f"event: message\nid: 2\ndata: {json.dumps(answer)}\n\n".encode())
        await stream.write_eof()
        return stream

    def app(self) -> web.Application:
        return mcp_app(self.handle)


async def start(
    tmp_path: Any, start_upstream: Any, start_gateway: Any, sse: bool = False
) -> tuple[Any, Server]:
    server = Server(sse)
    return await start_with(tmp_path, start_upstream, start_gateway, server.handle), server


async def test_an_allowed_call_reaches_the_server_with_its_headers(
    tmp_path, start_upstream, start_gateway
):
    gw, server = await start(tmp_path, start_upstream, start_gateway)
    started = await post(gw, rpc("initialize", {"protocolVersion": "2025-11-25"}, id=0))
    session = started.headers["Mcp-Session-Id"]  # the server's "s-1", bound to this agent
    assert session.startswith("s-1~") and len(session) == len("s-1~") + 32
    resp = await post(
        gw,
        rpc("tools/call", {"name": "add", "arguments": {"a": 1}}),
        **{"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"},
    )
    assert resp.status == 200
    assert (await resp.json())["result"]["content"][0]["text"] == "42"
    assert resp.headers["Mcp-Session-Id"] == session
    assert resp.headers["Cache-Control"] == "public, max-age=3600", "only lists are per agent"
    method, headers, body = server.seen[-1]
    assert (method, body["params"]["name"]) == ("POST", "add")
    assert headers["Mcp-Session-Id"] == "s-1", "the server gets its own id"
    assert headers["MCP-Protocol-Version"] == "2025-11-25"
    assert headers["Host"].startswith("127.0.0.1:"), "the upstream's own host, not the gateway's"
    assert "test-agent-token" not in json.dumps(headers)

    records = await wait_for_records(
        gw.services.config.audit.path, lambda rs: sum(r["kind"] == "outcome" for r in rs) == 2
    )
    decision = [r for r in records if r["kind"] == "decision"][-1]
    assert decision["mcp"]["method"] == "tools/call"
    assert decision["mcp"]["tool"] == "add"
    assert len(decision["mcp"]["arguments_sha256"]) == 64
    metrics = await (await gw.admin.get("/metrics")).text()
    assert (
        'callgate_mcp_requests_total{method="tools/call",outcome="forwarded",tool="mcp"} 1.0'
        in metrics
    )


async def test_a_session_id_works_only_for_the_agent_it_was_issued_to(
    tmp_path, start_upstream, start_gateway
):
    gw, server = await start(tmp_path, start_upstream, start_gateway)
    started = await post(gw, rpc("initialize", {"protocolVersion": "2025-11-25"}, id=0))
    session = started.headers["Mcp-Session-Id"]
    seen = len(server.seen)
    for token, value in (
        (auth(OTHER_TOKEN), session),
        (auth(), "s-1"),
        (auth(), "s-1~" + "0" * 32),
    ):
        resp = await gw.get("/tools/mcp", headers={**token, "Mcp-Session-Id": value})
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"
        resp = await gw.delete("/tools/mcp", headers={**token, "Mcp-Session-Id": value})
        assert resp.status == 404
    assert len(server.seen) == seen, "nothing reached the server"


async def test_a_denied_tool_call_is_a_tool_error_the_model_reads(
    tmp_path, start_upstream, start_gateway
):
    gw, server = await start(tmp_path, start_upstream, start_gateway)
    resp = await post(
        gw, rpc("tools/call", {"name": "refund", "arguments": {"amount": 5000}}, id="r-7")
    )
    assert resp.status == 200
    answer = await resp.json()
    assert answer["id"] == "r-7"
    result = answer["result"]
    assert result["isError"] is True
    assert result["resultType"] == "complete"
    error = json.loads(result["content"][0]["text"])["error"]
    assert error["code"] == "policy_denied"
    assert error["message"] == "refunds of 5000 are too large"
    assert error["request_id"] == resp.headers["X-Request-Id"]
    assert server.seen == []


async def test_other_refused_requests_are_json_rpc_errors(tmp_path, start_upstream, start_gateway):
    gw, server = await start(tmp_path, start_upstream, start_gateway)
    resp = await post(gw, rpc("resources/read", {"uri": "file:///etc/passwd"}, id=3))
    assert resp.status == 200
    answer = await resp.json()
    assert answer["id"] == 3
    assert answer["error"]["code"] == -32001
    assert answer["error"]["data"]["error"]["code"] == "policy_denied"
    assert server.seen == []


async def test_a_switched_off_tool_answers_calls_as_tool_errors(
    tmp_path, start_upstream, start_gateway
):
    gw, server = await start(tmp_path, start_upstream, start_gateway)
    resp = await gw.admin.put(
        "/api/v1/switches/tool:mcp", headers=approver_headers("olga"), json={"reason": "incident 7"}
    )
    assert resp.status == 200
    resp = await post(gw, rpc("tools/call", {"name": "add", "arguments": {}}, id=9))
    answer = await resp.json()
    assert resp.status == 200 and answer["id"] == 9
    error = json.loads(answer["result"]["content"][0]["text"])["error"]
    assert error["code"] == "switched_off"
    assert "incident 7" in error["message"]
    assert server.seen == []


async def test_batches_and_header_mismatches_are_refused(tmp_path, start_upstream, start_gateway):
    gw, server = await start(tmp_path, start_upstream, start_gateway)
    resp = await post(gw, [rpc("ping", id=1), rpc("ping", id=2)])
    assert resp.status == 400
    answer = await resp.json()
    assert answer["id"] is None
    assert answer["error"]["code"] == -32600
    assert "batches are not accepted" in answer["error"]["message"]

    call = rpc("tools/call", {"name": "refund", "arguments": {"amount": 1}})
    resp = await post(gw, call, **{"Mcp-Name": "add"})
    answer = await resp.json()
    assert resp.status == 400
    assert answer["error"]["code"] == -32020, "HEADER_MISMATCH"
    assert answer["id"] == call["id"], "the refused request's own id"
    assert (
        "the Mcp-Name header says 'add' but the body names 'refund'" in answer["error"]["message"]
    )
    resp = await post(gw, call, **{"Mcp-Method": "tools/list"})
    assert resp.status == 400
    assert server.seen == []

    # Routing headers on what carries no method would reach the server unchecked.
    claim = {"Mcp-Method": "tools/call", "Mcp-Name": "refund"}
    resp = await post(gw, {"jsonrpc": "2.0", "id": 1, "result": {}}, **claim)
    assert resp.status == 400
    assert "the Mcp-Method header does not belong" in (await resp.json())["error"]["message"]
    for method in ("GET", "DELETE"):
        resp = await gw.request(method, "/tools/mcp", headers={**auth(), "Mcp-Name": "refund"})
        assert resp.status == 400, method
    assert server.seen == []

    call = rpc("tools/call", {"name": "add", "arguments": {"a": 1}})
    resp = await post(gw, call, **{"Mcp-Method": "tools/call", "Mcp-Name": "add"})
    assert resp.status == 200, "headers that agree with the body pass"


async def test_notifications_pass_without_a_decision(tmp_path, start_upstream, start_gateway):
    gw, server = await start(tmp_path, start_upstream, start_gateway)
    # The policy allows no notifications/cancelled: passing shows it was not asked.
    cancelled = rpc("notifications/cancelled", {"requestId": 3}, id=None)
    resp = await post(gw, cancelled, token_headers=auth(OTHER_TOKEN))
    assert resp.status == 202
    assert server.seen[-1][2]["method"] == "notifications/cancelled"


async def test_tools_list_is_filtered_per_agent(tmp_path, start_upstream, start_gateway):
    for sse in (False, True):
        (tmp_path / str(sse)).mkdir()
        gw, server = await start(tmp_path / str(sse), start_upstream, start_gateway, sse=sse)
        for token, expected in ((auth(), ["add", "refund"]), (auth(OTHER_TOKEN), ["add"])):
            resp = await post(gw, rpc("tools/list", id=5), token_headers=token)
            assert resp.status == 200
            if not sse:
                answer = await resp.json()
            else:
                assert resp.headers["Content-Type"].startswith("text/event-stream")
                events = (await resp.text()).split("\n\n")
                assert (
                    events[0]
                    == 'event: message\nid: 1\ndata: {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}'
                )
                assert events[1].startswith("event: message\nid: 2\ndata: ")
                answer = json.loads(events[1].split("data: ", 1)[1])
            assert answer["id"] == 5
            assert [t["name"] for t in answer["result"]["tools"]] == expected
            assert answer["result"]["cacheScope"] == "private"
            assert resp.headers["Cache-Control"] == "private, max-age=3600"
        # The agent's gzip is not asked for: the list is read, and scrubbed of the credential.
        sent = [(k.lower(), v) for k, v in server.seen[-1][1].items()]
        assert [v for k, v in sent if k == "accept-encoding"] == ["identity"]


async def test_the_event_stream_is_closed_upstream_when_the_agent_leaves(tmp_path, start_upstream):
    # A gateway process of its own: aiohttp's test server cancels a handler whose client
    # left by itself, which `python -m gateway serve` does not.
    server = Server()
    url = await start_upstream(server.app())
    tool = {"name": "mcp", "upstream": url + "/mcp", "kind": "mcp", "timeout_s": 5}
    gateway = Gateway(tmp_path, url, extra={"tools": [tool]})
    await gateway.start()
    try:
        async with aiohttp.ClientSession() as session:
            resp = await session.get(
                f"{gateway.url}/tools/mcp", headers={**auth(), "Accept": "text/event-stream"}
            )
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "text/event-stream"
            await asyncio.sleep(0.2)
            assert not server.stream_closed.is_set()
            resp.close()  # the agent hangs up on a quiet stream
            async with asyncio.timeout(5):
                await server.stream_closed.wait()
    finally:
        assert await gateway.stop() == 0


async def test_an_mcp_tool_has_one_endpoint(tmp_path, start_upstream, start_gateway):
    gw, _server = await start(tmp_path, start_upstream, start_gateway)
    resp = await gw.post("/tools/mcp/other", json=rpc("ping"), headers=auth())
    assert resp.status == 400
    assert "its one endpoint is /tools/mcp" in (await resp.json())["error"]["message"]


async def test_the_loop_breaker_counts_tool_calls_not_protocol_traffic(
    tmp_path, start_upstream, start_gateway
):
    url = await start_upstream(Server().app())
    config = mcp_config(tmp_path, url + "/mcp")
    other = config.tools[0].model_copy(update={"name": "mcp2"})  # another server, same tools
    gw = await start_gateway(config=config.model_copy(update={"tools": (*config.tools, other)}))
    for n in range(8):
        resp = await post(gw, rpc("ping", id=n))
        assert resp.status == 200, "pings repeat by design"

    async def add(n: int, endpoint: str = "/tools/mcp") -> dict[str, Any]:
        call = rpc("tools/call", {"name": "add", "arguments": {"a": 1}}, id=100 + n)
        headers = {**auth(), "Accept": "application/json, text/event-stream"}
        return (await (await gw.post(endpoint, json=call, headers=headers)).json())["result"]

    answers = [await add(n) for n in range(5)]  # the same call each time, a new JSON-RPC id
    answers += [await add(n, "/tools/mcp2") for n in range(5)]
    answers.append(await add(5))
    assert [a.get("isError") for a in answers] == [False] * 10 + [True]
    assert json.loads(answers[10]["content"][0]["text"])["error"]["code"] == "loop_detected"


def list_event(id: int, description: str = "adds") -> str:
    tools = [{"name": n, "description": description} for n in ("add", "secret")]
    answer = {"jsonrpc": "2.0", "id": id, "result": {"tools": tools}}
    return f"event: message\ndata: {json.dumps(answer, ensure_ascii=False)}\n\n"


async def test_unicode_line_separators_do_not_get_a_list_past_the_filter(
    tmp_path, start_upstream, start_gateway
):
    streams = Streams({"tools/list": [list_event(5, "adds\u2028numbers")]})
    gw = await start_streams(tmp_path, start_upstream, start_gateway, streams)
    resp = await post(gw, rpc("tools/list", id=5), token_headers=auth(OTHER_TOKEN))
    answer = json.loads((await resp.text()).split("data: ", 1)[1])
    assert [t["name"] for t in answer["result"]["tools"]] == ["add"]
    assert answer["result"]["tools"][0]["description"] == "adds\u2028numbers"


async def test_a_list_replayed_on_the_get_stream_is_filtered_too(
    tmp_path, start_upstream, start_gateway
):
    """After Last-Event-ID a server replays a tools/list result on the GET stream."""
    streams = Streams({"GET": [": keep-alive\n\n", list_event(99)]})
    gw = await start_streams(tmp_path, start_upstream, start_gateway, streams)
    resp = await gw.get("/tools/mcp", headers={**auth(OTHER_TOKEN), "Last-Event-ID": "s:3"})
    events = (await resp.text()).split("\n\n")
    assert events[0] == ": keep-alive"
    assert [t["name"] for t in json.loads(events[1].split("data: ", 1)[1])["result"]["tools"]] == [
        "add"
    ]


async def test_an_event_that_cannot_be_checked_cuts_the_stream(
    tmp_path, start_upstream, start_gateway
):
    streams = Streams({"tools/list": ["event: message\ndata: {not json\n\n", list_event(5)]})
    gw = await start_streams(tmp_path, start_upstream, start_gateway, streams)
    resp = await post(gw, rpc("tools/list", id=5), token_headers=auth(OTHER_TOKEN))
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()


async def test_a_listen_stream_has_no_read_timeout(tmp_path, start_upstream, start_gateway):
    note = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
    streams = Streams({"subscriptions/listen": [f"data: {json.dumps(note)}\n\n"]}, quiet_s=1.5)
    gw = await start_streams(tmp_path, start_upstream, start_gateway, streams, timeout_s=0.5)
    resp = await post(gw, rpc("subscriptions/listen", {}, id=1))
    assert json.loads((await resp.text()).split("data: ", 1)[1]) == note


async def test_requests_without_an_id_and_routing_headers_are_checked(
    tmp_path, start_upstream, start_gateway
):
    gw, server = await start(tmp_path, start_upstream, start_gateway)
    resp = await post(gw, rpc("tools/call", {"name": "secret", "arguments": {}}, id=None))
    assert resp.status == 400
    assert "only notifications/* may come without one" in (await resp.json())["error"]["message"]

    call = rpc("resources/read", {"uri": "file:///café.txt"})
    encoded = "=?base64?" + base64.b64encode("file:///café.txt".encode()).decode() + "?="
    resp = await post(gw, call, **{"Mcp-Name": encoded})
    assert (await resp.json())["error"]["data"]["error"]["code"] == "policy_denied", (
        "decoded: it matched"
    )
    resp = await post(gw, call, **{"Mcp-Name": "=?base64?%%%?="})
    assert resp.status == 400
    resp = await gw.post(
        "/tools/mcp",
        json=rpc("tools/call", {"name": "add", "arguments": {}}),
        headers=[
            ("Authorization", f"Bearer {AGENT_TOKEN}"),
            ("Mcp-Name", "add"),
            ("Mcp-Name", "add"),
        ],
    )
    assert resp.status == 400
    assert server.seen == []


async def test_mcp_decisions_replay_as_they_were_decided(tmp_path, start_upstream, start_gateway):
    server = Server()
    url = await start_upstream(server.app())
    config = mcp_config(tmp_path, url + "/mcp")
    config = config.model_copy(
        update={"audit": config.audit.model_copy(update={"record_bodies": True})}
    )
    gw = await start_gateway(config=config)
    version = {"MCP-Protocol-Version": "2025-11-25"}
    await post(gw, rpc("tools/call", {"name": "add", "arguments": {"a": 1}}), **version)
    await post(gw, rpc("tools/call", {"name": "refund", "arguments": {"amount": 5000}}), **version)
    await post(gw, rpc("tools/call", {"name": "add"}), **version)
    await post(gw, rpc("prompts/get", {"name": "p", "arguments": {"x": "1"}}), **version)
    await post(gw, {"jsonrpc": "2.0", "method": "notifications/initialized"}, **version)
    audit = gw.services.config.audit.path
    await wait_for_records(audit, lambda rs: sum(r["kind"] == "decision" for r in rs) == 5)

    export = tmp_path / "inputs.jsonl"
    code, out = await cli(
        "audit", "export", "--db", str(audit), "--format", "policy-input", "--output", str(export)
    )
    assert code == 0, out
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    assert len(lines) == 4, "the notification passed without a policy decision"
    add, refund, no_arguments, prompt = (line["input"] for line in lines)
    assert no_arguments["mcp"]["arguments"] == {}, "as the policy saw it"
    assert prompt["mcp"]["arguments"] is None, "arguments are a tools/call's only"
    assert add["tool"] == {"name": "mcp", "kind": "mcp"}
    assert add["mcp"] == {
        "method": "tools/call",
        "tool": "add",
        "arguments": {"a": 1},
        "protocol_version": "2025-11-25",
    }
    assert refund["mcp"]["arguments"] == {"amount": 5000}

    code, out = await cli(
        "policy", "replay", "--audit", str(export), "--policies", str(config.policy.path)
    )
    assert code == 0, out
    assert out.splitlines()[0].endswith("0 would change, 4 unchanged"), out


async def test_an_idempotent_replay_gives_the_agent_its_own_session_id(
    tmp_path, start_upstream, start_gateway
):
    gw, server = await start(tmp_path, start_upstream, start_gateway)
    call = rpc("tools/call", {"name": "add", "arguments": {"a": 1}})
    first = await post(gw, call, **{"Idempotency-Key": "k-1"})
    again = await post(gw, call, **{"Idempotency-Key": "k-1"})
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Mcp-Session-Id"] == first.headers["Mcp-Session-Id"] != "s-1"
    assert len(server.seen) == 1
    resp = await post(gw, rpc("ping", id=2), **{"Mcp-Session-Id": again.headers["Mcp-Session-Id"]})
    assert resp.status == 200, "the replayed session id is one this gateway accepts"


class Stalling:
    """Sends a progress notification, then holds the answer until the test releases it."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        progress = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}
        await stream.write(f"event: message\ndata: {json.dumps(progress)}\n\n".encode())
        await self.release.wait()
        answer = {"jsonrpc": "2.0", "id": body["id"], "result": Server().result_for(body)}
        await stream.write(f"event: message\ndata: {json.dumps(answer)}\n\n".encode())
        await stream.write_eof()
        return stream


@pytest.mark.parametrize("method", ["tools/call", "tools/list"])
async def test_a_notification_reaches_the_agent_before_the_server_answers(
    tmp_path, start_upstream, start_gateway, method
):
    stalling = Stalling()
    gw = await start_with(tmp_path, start_upstream, start_gateway, stalling.handle)
    params = {"name": "add", "arguments": {"a": 1}} if method == "tools/call" else {}
    resp = await post(gw, rpc(method, params))
    async with asyncio.timeout(5):  # unbuffered: here while the server still holds its answer
        first = await resp.content.readuntil(b"\n\n")
    assert b"notifications/progress" in first
    stalling.release.set()
    answer = json.loads((await resp.text()).split("data: ", 1)[1])
    assert answer["result"]["tools" if method == "tools/list" else "content"]


async def test_a_tool_list_in_another_content_type_is_filtered_too(
    tmp_path, start_upstream, start_gateway
):
    async def plain(request: web.Request) -> web.Response:
        body = await request.json()
        answer = {"jsonrpc": "2.0", "id": body["id"], "result": {"tools": TOOLS}}
        return web.Response(text=json.dumps(answer), content_type="text/plain")

    gw = await start_with(tmp_path, start_upstream, start_gateway, plain)
    resp = await post(gw, rpc("tools/list", id=5), token_headers=auth(OTHER_TOKEN))
    answer = json.loads(await resp.text())
    assert [t["name"] for t in answer["result"]["tools"]] == ["add"]


async def test_a_held_stream_ends_with_a_tool_error_when_the_store_fails(
    tmp_path, start_upstream, start_gateway
):
    server = Server()
    url = await start_upstream(server.app())
    gw = await start_gateway(config=mcp_config(tmp_path, url + "/mcp", approval_wait_s=20))
    call = rpc(
        "tools/call",
        {"name": "refund", "arguments": {"amount": 5}, "_meta": {"progressToken": "p"}},
    )
    resp = await post(gw, call)
    assert resp.headers["Content-Type"] == "text/event-stream"
    async with asyncio.timeout(5):
        assert b"waiting for approval" in await resp.content.readuntil(b"\n\n")
    await gw.services.actions.close()  # the store goes away while the call is held
    async with asyncio.timeout(10):
        events = (await resp.text()).strip().split("\n\n")
    last = json.loads(events[-1].split("data: ", 1)[1])
    assert last["result"]["isError"] is True
    assert "could not follow action" in last["result"]["content"][0]["text"]
    assert server.seen == [], "nothing was sent to the tool"


@pytest.mark.parametrize(("status", "text"), [(200, "not json"), (202, "")])
async def test_a_tool_list_that_cannot_be_read_is_a_clean_error(
    tmp_path, start_upstream, start_gateway, status, text
):
    async def unreadable(request: web.Request) -> web.Response:
        return web.Response(status=status, text=text, content_type="text/plain")

    gw = await start_with(tmp_path, start_upstream, start_gateway, unreadable)
    resp = await post(gw, rpc("tools/list", id=5))
    answer = await resp.json()  # a whole answer, not a cut body
    assert answer["id"] == 5
    assert answer["error"]["data"]["error"]["code"] == "upstream_unreachable"
    assert "nothing is listed" in answer["error"]["message"]
