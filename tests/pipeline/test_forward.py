"""Pass-through fidelity: what the agent sends is what the tool gets, and back.

Every test runs a real upstream and a real gateway on 127.0.0.1; the upstream records
exactly what reached it (method, raw request target, headers with repeats, body bytes).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from tests.support.gateway import AGENT_TOKEN, OTHER_TOKEN, TOOL_SECRET, auth
from tests.support.process import free_port

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@dataclass
class Seen:
    """One request as the upstream received it."""

    method: str
    raw_path: str
    headers: CIMultiDict[str]
    body: bytes


def recording_app(**app_kw: Any) -> tuple[web.Application, list[Seen]]:
    """An upstream that records every request and answers with the body it got."""
    seen: list[Seen] = []

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append(Seen(request.method, request.raw_path, CIMultiDict(request.headers), body))
        return web.Response(
            body=body,
            content_type="application/octet-stream",
            headers={"X-Echo-Method": request.method, "X-Echo-Target": request.raw_path},
        )

    app = web.Application(**app_kw)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app, seen


async def gateway_for(start_upstream: Any, start_gateway: Any, app: web.Application, **kw: Any):
    return await start_gateway(await start_upstream(app), **kw)


def raw_url(gw: Any, target: str) -> URL:
    """An absolute URL to the gateway whose path and query are sent exactly as written."""
    return URL(f"http://127.0.0.1:{gw.server.port}{target}", encoded=True)


async def raw_get(
    gw: Any, target: str, headers: list[tuple[str, str]], method: str = "GET", body: bytes = b""
) -> int:
    """A request over a plain socket, header names and repeats exactly as given (HTTP
    clients add, merge or re-case them); returns the status."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.server.port)
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 3)
    finally:
        writer.close()
    return int(response.split(b" ", 2)[1])


# --- methods, query strings, bodies --------------------------------------------------------

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
WITH_BODY = {"POST", "PUT", "PATCH", "DELETE"}


@pytest.mark.parametrize("method", METHODS, ids=[m.lower() for m in METHODS])
async def test_every_method_reaches_upstream_unchanged(start_upstream, start_gateway, method):
    app, seen = recording_app()
    gw = await gateway_for(start_upstream, start_gateway, app)
    body = f"body of {method}".encode() if method in WITH_BODY else None
    resp = await gw.request(method, "/tools/echo/things/1", headers=auth(), data=body)
    assert resp.status == 200
    assert resp.headers["X-Echo-Method"] == method
    assert [s.method for s in seen] == [method]
    assert seen[0].raw_path == "/things/1"
    assert seen[0].body == (body or b"")
    if method == "HEAD":
        assert await resp.read() == b""
    else:
        assert await resp.read() == (body or b"")


async def test_head_keeps_the_upstream_content_length(start_upstream, start_gateway):
    async def sized(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 1234, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_route("*", "/file", sized)
    gw = await gateway_for(start_upstream, start_gateway, app)
    resp = await gw.head("/tools/echo/file", headers=auth())
    assert resp.status == 200
    assert resp.headers["Content-Length"] == "1234"
    assert await resp.read() == b""
    # The agent's connection is still in a clean state for the next call.
    resp = await gw.get("/tools/echo/file", headers=auth())
    assert await resp.read() == b"x" * 1234


QUERIES = [
    ("a=1", "simple"),
    ("a=1&a=2&a=3", "repeated-keys"),
    ("b=&c&d=", "empty-values-and-bare-key"),
    ("q=%20x%2By+z%26w%3D", "encoded-reserved-chars"),
    ("name=caf%C3%A9&lower=caf%c3%a9", "utf8-both-hex-cases"),
    ("path=%2F..%2Fetc&dots=../..", "slashes-and-dots-in-query"),
    ("x=1;y=2&z=a,b:c@d/e?f", "sub-delims-and-slash-question"),
    ("emoji=%F0%9F%98%80&tilde=~", "emoji-and-tilde"),
    ("b=2&a=1&b=1", "order-kept"),
    ("ids[]=1&ids[]=2&page[size]=10", "raw-brackets"),
    ("next=/a?b=c", "question-mark-in-value"),
]


@pytest.mark.parametrize("query", [q for q, _ in QUERIES], ids=[i for _, i in QUERIES])
async def test_query_string_is_forwarded_byte_for_byte(start_upstream, start_gateway, query):
    app, seen = recording_app()
    gw = await gateway_for(start_upstream, start_gateway, app)
    async with aiohttp.ClientSession() as session:
        resp = await session.get(raw_url(gw, f"/tools/echo/search?{query}"), headers=auth())
        assert resp.status == 200
    assert [s.raw_path for s in seen] == [f"/search?{query}"]


async def test_binary_body_arrives_identical(start_upstream, start_gateway):
    app, seen = recording_app()
    gw = await gateway_for(start_upstream, start_gateway, app)
    body = bytes(range(256)) * 4 + b"\xff\xfe\x00\x80\xc3\x28"  # not valid UTF-8
    resp = await gw.post(
        "/tools/echo/blob",
        headers={**auth(), "Content-Type": "application/octet-stream"},
        data=body,
    )
    assert resp.status == 200
    assert await resp.read() == body
    assert seen[0].body == body
    assert seen[0].headers["Content-Type"] == "application/octet-stream"
    assert seen[0].headers["Content-Length"] == str(len(body))


async def test_large_body_under_the_limit_arrives_identical(start_upstream, start_gateway):
    app, seen = recording_app(client_max_size=8 * 1024 * 1024)
    gw = await gateway_for(start_upstream, start_gateway, app)  # max_body_bytes is 4 MiB
    body = os.urandom(3 * 1024 * 1024)
    resp = await gw.put("/tools/echo/upload", headers=auth(), data=body)
    assert resp.status == 200
    assert hashlib.sha256(await resp.read()).hexdigest() == hashlib.sha256(body).hexdigest()
    assert len(seen[0].body) == len(body)
    assert seen[0].body == body


async def test_non_json_body_is_forwarded_with_its_content_type(start_upstream, start_gateway):
    app, seen = recording_app()
    gw = await gateway_for(start_upstream, start_gateway, app)
    body = b'plain text, not {"json": at all'
    resp = await gw.post(
        "/tools/echo/notes",
        headers={**auth(), "Content-Type": "text/plain; charset=utf-8"},
        data=body,
    )
    assert resp.status == 200
    assert seen[0].body == body
    assert seen[0].headers["Content-Type"] == "text/plain; charset=utf-8"


async def test_json_body_is_forwarded_byte_for_byte(start_upstream, start_gateway):
    app, seen = recording_app()
    gw = await gateway_for(start_upstream, start_gateway, app)
    body = b'{ "b": 1,  "a": [1.0, 2e3], "s": "\\u00e9" }'  # spacing, order, escapes kept
    resp = await gw.post(
        "/tools/echo/json", headers={**auth(), "Content-Type": "application/json"}, data=body
    )
    assert resp.status == 200
    assert seen[0].body == body


# --- responses -------------------------------------------------------------------------------

CHUNKS = [b"first chunk\n", b"\x00\x01\x02 binary \xff\n", b"x" * 70_000, b"last\n"]


async def test_chunked_upstream_response_arrives_identical(start_upstream, start_gateway):
    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for chunk in CHUNKS:
            await resp.write(chunk)
            await asyncio.sleep(0.01)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/stream", chunked)
    gw = await gateway_for(start_upstream, start_gateway, app)
    resp = await gw.get("/tools/echo/stream", headers=auth())
    assert resp.status == 200
    assert "Content-Length" not in resp.headers
    assert resp.headers["Transfer-Encoding"] == "chunked"
    assert await resp.read() == b"".join(CHUNKS)


async def test_response_is_streamed_not_buffered(start_upstream, start_gateway):
    """The agent gets the first chunk while the upstream is still holding back the rest."""
    go = asyncio.Event()

    async def held(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b"early;")
        await asyncio.wait_for(go.wait(), 1.5)
        await resp.write(b"late")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/held", held)
    gw = await gateway_for(start_upstream, start_gateway, app)
    resp = await gw.get("/tools/echo/held", headers=auth())
    assert resp.status == 200
    assert await asyncio.wait_for(resp.content.readexactly(6), 1) == b"early;"
    go.set()
    assert await asyncio.wait_for(resp.read(), 1) == b"late"


async def test_gzip_response_passes_through_still_compressed(start_upstream, start_gateway):
    """A tool with nothing to scrub (no credentials, no redact_response): its answer is
    passed as it came (a scrubbed tool's is decoded: tests/pipeline/test_answers.py)."""
    plain = b"compress me " * 500
    packed = gzip.compress(plain)
    seen_accept: list[str | None] = []

    async def gz(request: web.Request) -> web.Response:
        seen_accept.append(request.headers.get("Accept-Encoding"))
        return web.Response(
            body=packed, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"}
        )

    app = web.Application()
    app.router.add_get("/gz", gz)
    gw = await gateway_for(start_upstream, start_gateway, app, tool={"credentials": None})
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        resp = await session.get(
            raw_url(gw, "/tools/echo/gz"), headers={**auth(), "Accept-Encoding": "gzip"}
        )
        raw = await resp.read()
    assert resp.status == 200
    assert resp.headers["Content-Encoding"] == "gzip"
    assert resp.headers["Content-Length"] == str(len(packed))
    assert raw == packed
    assert gzip.decompress(raw) == plain
    assert seen_accept == ["gzip"]


STATUSES = [
    (200, b"ok"),
    (201, b'{"id": 7}'),
    (204, b""),
    (301, b"moved"),
    (404, b"no such ticket"),
    (418, b"short and stout"),
    (500, b"upstream exploded"),
    (503, b"upstream overloaded"),
]


@pytest.mark.parametrize(("status", "body"), STATUSES, ids=[str(s) for s, _ in STATUSES])
async def test_upstream_status_and_body_pass_through(start_upstream, start_gateway, status, body):
    redirect_target_calls: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        headers = {"X-Upstream": "yes"}
        if status == 301:
            headers["Location"] = "/elsewhere"
        return web.Response(status=status, body=body or None, headers=headers)

    async def elsewhere(request: web.Request) -> web.Response:
        redirect_target_calls.append(request.raw_path)
        return web.Response(text="followed!")

    app = web.Application()
    app.router.add_route("*", "/answer", answer)
    app.router.add_route("*", "/elsewhere", elsewhere)
    gw = await gateway_for(start_upstream, start_gateway, app)
    resp = await gw.get("/tools/echo/answer", headers=auth(), allow_redirects=False)
    assert resp.status == status
    assert await resp.read() == body
    assert resp.headers["X-Upstream"] == "yes"
    assert UUID.match(resp.headers["X-Request-Id"])
    if status == 301:
        assert resp.headers["Location"] == "/elsewhere"
    assert redirect_target_calls == []


async def test_repeated_response_headers_arrive_as_separate_headers(start_upstream, start_gateway):
    async def multi(request: web.Request) -> web.Response:
        resp = web.Response(text="ok")
        resp.headers.add("Set-Cookie", "a=1; Path=/")
        resp.headers.add("Set-Cookie", "b=2; Path=/; HttpOnly")
        resp.headers.add("X-Multi", "one")
        resp.headers.add("X-Multi", "two")
        resp.headers["X-Request-Id"] = "the-upstream-own-id"
        return resp

    app = web.Application()
    app.router.add_get("/multi", multi)
    gw = await gateway_for(start_upstream, start_gateway, app)
    resp = await gw.get("/tools/echo/multi", headers=auth())
    assert resp.status == 200
    assert resp.headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/; HttpOnly"]
    assert resp.headers.getall("X-Multi") == ["one", "two"]
    # The gateway's request id replaces the upstream's own, exactly once.
    [request_id] = resp.headers.getall("X-Request-Id")
    assert UUID.match(request_id)


async def test_repeated_request_headers_arrive_as_sent(start_upstream, start_gateway):
    app, seen = recording_app()
    gw = await gateway_for(start_upstream, start_gateway, app)
    headers = [
        *auth().items(),
        ("X-Multi", "one"),
        ("Accept", "text/plain"),
        ("X-Multi", "two"),
        ("X-Multi", "three, four"),
    ]
    resp = await gw.get("/tools/echo/h", headers=headers)
    assert resp.status == 200
    assert seen[0].headers.getall("X-Multi") == ["one", "two", "three, four"]
    assert seen[0].headers.getall("Accept") == ["text/plain"]


async def test_repeated_request_headers_spelled_differently_all_arrive(
    start_upstream, start_gateway
):
    app, seen = recording_app()
    gw = await gateway_for(start_upstream, start_gateway, app)
    headers = [*auth().items(), ("X-Multi", "one"), ("x-multi", "two"), ("X-MULTI", "three")]
    assert await raw_get(gw, "/tools/echo/h", headers) == 200
    assert seen[0].headers.getall("X-Multi") == ["one", "two", "three"]


async def test_repeated_response_headers_spelled_differently_all_arrive(
    start_upstream, start_gateway
):
    async def multi(request: web.Request) -> web.Response:
        resp = web.Response(text="ok")
        resp.headers.add("X-Multi", "one")
        resp.headers.add("x-multi", "two")
        resp.headers.add("set-cookie", "a=1")
        resp.headers.add("Set-Cookie", "b=2")
        return resp

    app = web.Application()
    app.router.add_get("/multi", multi)
    gw = await gateway_for(start_upstream, start_gateway, app)
    resp = await gw.get("/tools/echo/multi", headers=auth())
    assert resp.status == 200
    assert resp.headers.getall("X-Multi") == ["one", "two"]
    assert resp.headers.getall("Set-Cookie") == ["a=1", "b=2"]


# --- credentials and gateway-owned headers ---------------------------------------------------


def all_header_text(headers: CIMultiDict[str]) -> str:
    return "\n".join(f"{k}: {v}" for k, v in headers.items())


async def test_upstream_sees_tool_credentials_never_the_agent_token(start_upstream, start_gateway):
    app, seen = recording_app()
    gw = await gateway_for(start_upstream, start_gateway, app)
    resp = await gw.get("/tools/echo/whoami", headers=auth())
    assert resp.status == 200
    assert seen[0].headers.getall("Authorization") == [f"Bearer {TOOL_SECRET}"]
    assert AGENT_TOKEN not in all_header_text(seen[0].headers)


FORGED = [
    ([("X-Api-Key", "agent-forged")], "same-spelling"),
    ([("x-api-key", "agent-forged")], "lower-case"),
    ([("X-Api-Key", "agent-forged"), ("X-Api-Key", "agent-forged-2")], "repeated"),
    (
        [("X-Api-Key", "agent-forged"), ("x-api-key", "agent-forged-2"), ("X-API-KEY", "3")],
        "repeated-mixed-case",
    ),
]


@pytest.mark.parametrize("forged", [f for f, _ in FORGED], ids=[i for _, i in FORGED])
async def test_agent_header_named_like_the_credential_header_is_replaced(
    start_upstream, start_gateway, forged
):
    app, seen = recording_app()
    gw = await gateway_for(
        start_upstream,
        start_gateway,
        app,
        tool={"credentials": {"header": "X-Api-Key", "value": TOOL_SECRET}},
    )
    assert await raw_get(gw, "/tools/echo/k", [*auth().items(), *forged]) == 200
    assert seen[0].headers.getall("X-Api-Key") == [TOOL_SECRET]
    # The agent's own Authorization (its gateway token) is never forwarded either.
    assert "Authorization" not in seen[0].headers
    assert "agent-forged" not in all_header_text(seen[0].headers)
    assert AGENT_TOKEN not in all_header_text(seen[0].headers)


INVENTED = [
    ("GET", [], b"", [], "get"),
    (
        "POST",
        [("Content-Length", "4")],
        b"\x00\x01\x02\x03",
        [("content-length", "4")],
        "post-without-content-type",
    ),
    (
        "POST",
        [("Transfer-Encoding", "chunked")],
        b"4\r\nabcd\r\n0\r\n\r\n",
        [("content-length", "4")],
        "post-chunked",
    ),
    ("POST", [("Content-Length", "0")], b"", [("content-length", "0")], "post-empty"),
]


@pytest.mark.parametrize(
    ("method", "sent", "body", "expected"),
    [i[:4] for i in INVENTED],
    ids=[i[4] for i in INVENTED],
)
async def test_upstream_gets_no_header_the_agent_did_not_send(
    start_upstream, start_gateway, method, sent, body, expected
):
    """Only the gateway's own headers are added: no User-Agent, Accept, Content-Type...
    (the forwarding headers say who the agent is: docs/security.md)."""
    app, seen = recording_app()
    gw = await gateway_for(start_upstream, start_gateway, app)
    headers = [*auth().items(), ("X-Agent", "a"), *sent]
    assert await raw_get(gw, "/tools/echo/x", headers, method=method, body=body) == 200
    got = [(name.lower(), value) for name, value in seen[0].headers.items()]
    port = got[0][1].rsplit(":", 1)[1]
    # The body's framing is the gateway's to set, wherever it goes; the rest keeps its order.
    assert [h for h in got if h[0] == "content-length"] == expected
    assert [h for h in got if h[0] != "content-length"] == [
        ("host", f"127.0.0.1:{port}"),
        ("x-agent", "a"),
        ("forwarded", "for=127.0.0.1;proto=http"),
        ("x-forwarded-for", "127.0.0.1"),
        ("x-forwarded-proto", "http"),
        ("authorization", f"Bearer {TOOL_SECRET}"),
        # The tool's answers are scrubbed of its credential: asked for unencoded.
        ("accept-encoding", "identity"),
        ("x-request-id", seen[0].headers["X-Request-Id"]),
        ("traceparent", seen[0].headers["traceparent"]),
    ]


async def test_tool_without_credentials_gets_no_authorization(start_upstream, start_gateway):
    app, seen = recording_app()
    gw = await gateway_for(start_upstream, start_gateway, app, tool={"credentials": None})
    resp = await gw.get("/tools/echo/open", headers=auth())
    assert resp.status == 200
    assert "Authorization" not in seen[0].headers


HOP_BY_HOP = [
    "Connection",
    "Keep-Alive",
    "TE",
    "Upgrade",
    "Proxy-Authorization",
    "Proxy-Connection",
    "X-Secret-Hop",
    "X-Other-Hop",
]


async def test_hop_by_hop_headers_are_not_forwarded(start_upstream, start_gateway):
    app, seen = recording_app()
    gw = await gateway_for(start_upstream, start_gateway, app)
    headers = [
        *auth().items(),
        ("Connection", "close, X-Secret-Hop"),
        ("connection", "x-other-hop"),
        ("X-Other-Hop", "other-hop-value"),
        ("X-Secret-Hop", "hop-value"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Upgrade", "h2c"),
        ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        ("Proxy-Connection", "keep-alive"),
        ("X-Kept", "kept"),
    ]
    assert await raw_get(gw, "/tools/echo/hop", headers) == 200
    upstream_headers = seen[0].headers
    assert [name for name in HOP_BY_HOP if name in upstream_headers] == []
    assert "hop-value" not in all_header_text(upstream_headers)
    assert upstream_headers["X-Kept"] == "kept"


async def test_hop_by_hop_response_headers_are_not_passed_back(start_upstream, start_gateway):
    async def hop(request: web.Request) -> web.Response:
        return web.Response(
            text="ok",
            headers={
                "Connection": "X-Upstream-Hop",
                "X-Upstream-Hop": "secret",
                "Keep-Alive": "timeout=99",
                "Proxy-Authenticate": "Basic",
                "X-Kept": "kept",
            },
        )

    app = web.Application()
    app.router.add_get("/hop", hop)
    gw = await gateway_for(start_upstream, start_gateway, app)
    resp = await gw.get("/tools/echo/hop", headers=auth())
    assert resp.status == 200
    assert await resp.text() == "ok"
    for name in ("X-Upstream-Hop", "Keep-Alive", "Proxy-Authenticate"):
        assert name not in resp.headers, name
    assert resp.headers["X-Kept"] == "kept"


async def test_upstream_sees_the_request_id_the_agent_gets(start_upstream, start_gateway):
    app, seen = recording_app()
    gw = await gateway_for(start_upstream, start_gateway, app)
    resp = await gw.get("/tools/echo/rid", headers={**auth(), "X-Request-Id": "agent-chosen"})
    assert resp.status == 200
    request_id = resp.headers["X-Request-Id"]
    assert UUID.match(request_id)
    assert seen[0].headers.getall("X-Request-Id") == [request_id]


async def test_request_ids_are_distinct_per_call(start_upstream, start_gateway):
    app, seen = recording_app()
    gw = await gateway_for(start_upstream, start_gateway, app)
    ids = []
    for _ in range(3):
        resp = await gw.get("/tools/echo/rid", headers=auth())
        ids.append(resp.headers["X-Request-Id"])
    assert len(set(ids)) == 3
    assert [s.headers["X-Request-Id"] for s in seen] == ids


async def test_traceparent_continues_the_callers_trace(start_upstream, start_gateway):
    app, seen = recording_app()
    gw = await gateway_for(start_upstream, start_gateway, app)
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    incoming = f"00-{trace_id}-{parent_id}-01"
    resp = await gw.get("/tools/echo/t", headers={**auth(), "traceparent": incoming})
    assert resp.status == 200
    [sent] = seen[0].headers.getall("traceparent")
    match = TRACEPARENT.match(sent)
    assert match is not None, sent
    assert match.group(1) == trace_id
    assert match.group(3) == "01"
    assert match.group(2) != parent_id
    assert match.group(2) != "0" * 16


INVALID_TRACEPARENTS = [
    (None, "absent"),
    ("garbage", "garbage"),
    ("00-" + "0" * 32 + "-00f067aa0ba902b7-01", "zero-trace-id"),
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01", "zero-parent-id"),
    ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "version-ff"),
    ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", "short-trace-id"),
]


@pytest.mark.parametrize(
    "incoming", [t for t, _ in INVALID_TRACEPARENTS], ids=[i for _, i in INVALID_TRACEPARENTS]
)
async def test_traceparent_absent_or_invalid_starts_a_fresh_trace(
    start_upstream, start_gateway, incoming
):
    app, seen = recording_app()
    gw = await gateway_for(start_upstream, start_gateway, app)
    headers = auth() if incoming is None else {**auth(), "traceparent": incoming}
    resp = await gw.get("/tools/echo/t", headers=headers)
    assert resp.status == 200
    [sent] = seen[0].headers.getall("traceparent")
    match = TRACEPARENT.match(sent)
    assert match is not None, sent
    assert match.group(1) != "0" * 32
    assert match.group(2) != "0" * 16
    assert match.group(1) not in (incoming or "")


# --- secrets never reach the agent -----------------------------------------------------------


SECRET_SCENARIOS = [
    ("GET", "/tools/echo/ok", auth(), None, 200, "forwarded"),
    ("GET", "/tools/echo/fail", auth(), None, 500, "upstream-error"),
    ("GET", "/tools/echo/slow", auth(), None, 504, "upstream-timeout"),
    ("GET", "/tools/dead/x", auth(), None, 502, "upstream-unreachable"),
    ("POST", "/tools/echo/ok", auth(), b"x" * 100, 413, "body-too-large"),
    ("GET", "/tools/nope/x", auth(), None, 404, "unknown-tool"),
    ("GET", "/tools/echo/a/%2e%2e/b", auth(), None, 400, "bad-path"),
    ("GET", "/tools/echo/ok", auth("wrong-token"), None, 401, "unknown-token"),
    ("GET", "/tools/echo/ok", auth(OTHER_TOKEN), None, 403, "policy-denied"),
]


@pytest.mark.parametrize(
    ("method", "target", "headers", "body", "status"),
    [s[:5] for s in SECRET_SCENARIOS],
    ids=[s[5] for s in SECRET_SCENARIOS],
)
async def test_agent_never_sees_the_tool_secret(
    start_upstream, start_gateway, method, target, headers, body, status
):
    release = asyncio.Event()

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="fine")

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=500, text="internal trouble")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.wait_for(release.wait(), 2)
        return web.Response(text="too late")

    app = web.Application()
    app.router.add_route("*", "/ok", ok)
    app.router.add_get("/fail", fail)
    app.router.add_get("/slow", slow)
    upstream = await start_upstream(app)
    dead = {
        "name": "dead",
        "upstream": f"http://127.0.0.1:{free_port()}",
        "credentials": {"header": "Authorization", "value": f"Bearer {TOOL_SECRET}"},
    }
    gw = await start_gateway(
        upstream, tool={"timeout_s": 0.3, "max_body_bytes": 10}, extra_tools=[dead]
    )
    try:
        async with aiohttp.ClientSession() as session:
            resp = await session.request(method, raw_url(gw, target), headers=headers, data=body)
            text = await resp.read()
        assert resp.status == status
        assert TOOL_SECRET.encode() not in text
        assert TOOL_SECRET not in all_header_text(CIMultiDict(resp.headers))
        assert TOOL_SECRET not in (resp.reason or "")
    finally:
        release.set()


# --- concurrency -----------------------------------------------------------------------------


async def test_200_concurrent_calls_each_get_their_own_answer(start_upstream, start_gateway):
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        await asyncio.sleep(0.001 * (int(request.match_info["n"]) % 7))  # shuffle completion
        return web.Response(body=request.raw_path.encode() + b"|" + body)

    app = web.Application()
    app.router.add_post("/item/{n}", echo)
    gw = await gateway_for(start_upstream, start_gateway, app)

    async def one(n: int) -> tuple[int, bytes]:
        resp = await gw.post(f"/tools/echo/item/{n}?n={n}", headers=auth(), data=f"body-{n}")
        return resp.status, await resp.read()

    async with asyncio.timeout(15):
        results = await asyncio.gather(*(one(n) for n in range(200)))
    assert results == [(200, f"/item/{n}?n={n}|body-{n}".encode()) for n in range(200)]
