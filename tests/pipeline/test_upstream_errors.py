"""When the tool misbehaves: timeouts, refused and reset connections, oversized bodies and
responses that break off. Every refusal is the gateway's JSON error; a response that breaks
off after it started is cut, never ended cleanly.

Misbehaving upstreams are raw asyncio servers on 127.0.0.1, so they can do what no HTTP
framework would (reset, send half a response).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.serve import start
from tests.support.gateway import AGENT_TOKEN, TOOL_SECRET, auth, make_config
from tests.support.process import free_port

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def raw_upstream() -> AsyncIterator[Callable[[RawHandler], Awaitable[str]]]:
    """raw_upstream(handler) -> base URL of an asyncio TCP server running that handler."""
    servers: list[asyncio.Server] = []
    handlers: list[asyncio.Task[Any]] = []
    calls: list[int] = []

    async def start(handler: RawHandler) -> str:
        async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            calls.append(1)
            task = asyncio.current_task()
            assert task is not None
            handlers.append(task)
            try:
                await handler(reader, writer)
            finally:
                writer.close()

        server = await asyncio.start_server(counted, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    start.calls = calls  # type: ignore[attr-defined]
    yield start
    for task in handlers:
        task.cancel()
    for server in servers:
        server.close()
        await server.wait_closed()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    """Read a request's head (up to the blank line), so the whole request was sent."""
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def assert_error(
    resp: aiohttp.ClientResponse,
    status: int,
    code: str,
    *,
    retryable: bool,
    upstream: str | None = None,
) -> dict[str, Any]:
    """The response is exactly the gateway's error document, and reveals nothing."""
    raw = await resp.read()
    assert resp.status == status, raw
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    document = json.loads(raw)
    assert list(document) == ["error"]
    error = document["error"]
    assert sorted(error) == ["code", "message", "request_id", "retryable"]
    assert error["code"] == code
    assert error["retryable"] is retryable
    assert isinstance(error["message"], str) and error["message"]
    assert error["request_id"] == resp.headers["X-Request-Id"]
    assert UUID.match(error["request_id"])
    text = raw.decode()
    for secret in (TOOL_SECRET, AGENT_TOKEN, "127.0.0.1", "http://"):
        assert secret not in text
        assert secret not in str(resp.headers)
    if upstream is not None:
        assert upstream not in text
        assert upstream.rsplit(":", 1)[1] not in error["message"]  # not even the port
    return error


# --- the tool does not answer in time --------------------------------------------------------


async def test_upstream_slower_than_timeout_is_504(start_upstream, start_gateway):
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await asyncio.wait_for(release.wait(), 3)
        return web.Response(text="too late")

    app = web.Application()
    app.router.add_get("/slow", slow)
    upstream = await start_upstream(app)
    gw = await start_gateway(upstream, tool={"timeout_s": 0.3})
    started = time.monotonic()
    try:
        resp = await gw.get("/tools/echo/slow", headers=auth())
        elapsed = time.monotonic() - started
        await assert_error(resp, 504, "upstream_timeout", retryable=True, upstream=upstream)
    finally:
        release.set()
    assert 0.3 <= elapsed < 1.5


async def test_raw_upstream_that_never_answers_is_504(raw_upstream, start_gateway):
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        await asyncio.sleep(2)

    upstream = await raw_upstream(silent)
    gw = await start_gateway(upstream, tool={"timeout_s": 0.3})
    resp = await gw.get("/tools/echo/x", headers=auth())
    await assert_error(resp, 504, "upstream_timeout", retryable=True, upstream=upstream)


async def test_slow_but_steady_stream_is_not_cut(start_upstream, start_gateway):
    """timeout_s bounds each pause in the body, not the whole transfer."""

    async def trickle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(6):
            await resp.write(f"part{i};".encode())
            await asyncio.sleep(0.1)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/trickle", trickle)
    gw = await start_gateway(await start_upstream(app), tool={"timeout_s": 0.3})
    resp = await gw.get("/tools/echo/trickle", headers=auth())
    assert resp.status == 200
    assert await asyncio.wait_for(resp.read(), 3) == b"part0;part1;part2;part3;part4;part5;"


async def test_stream_that_stalls_past_timeout_is_cut(start_upstream, start_gateway):
    release = asyncio.Event()

    async def stall(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b"beginning;")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(release.wait(), 3)
        return resp

    app = web.Application()
    app.router.add_get("/stall", stall)
    gw = await start_gateway(await start_upstream(app), tool={"timeout_s": 0.3})
    try:
        resp = await gw.get("/tools/echo/stall", headers=auth())
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await asyncio.wait_for(resp.read(), 2)
    finally:
        release.set()


# --- the tool cannot be reached or drops the connection ----------------------------------------


async def test_closed_port_is_502(start_gateway):
    upstream = f"http://127.0.0.1:{free_port()}"
    gw = await start_gateway(upstream)
    resp = await gw.get("/tools/echo/x", headers=auth())
    await assert_error(resp, 502, "upstream_unreachable", retryable=True, upstream=upstream)


async def _close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    pass  # the fixture closes the connection


async def _reset_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    reset(writer)


async def _close_after_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_head(reader)


async def _reset_after_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_head(reader)
    reset(writer)


async def _half_a_status_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_head(reader)
    writer.write(b"HTTP/1.1 200 O")
    await writer.drain()


async def _half_the_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/pl")
    await writer.drain()


async def _not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_head(reader)
    writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
    await writer.drain()


DROPS = [
    (_close_at_once, "close-on-accept"),
    (_reset_at_once, "reset-on-accept"),
    (_close_after_request, "close-after-request"),
    (_reset_after_request, "reset-after-request"),
    (_half_a_status_line, "half-a-status-line"),
    (_half_the_headers, "half-the-headers"),
    (_not_http, "not-http"),
]


@pytest.mark.parametrize("handler", [h for h, _ in DROPS], ids=[i for _, i in DROPS])
async def test_connection_dropped_before_an_answer_is_502(raw_upstream, start_gateway, handler):
    upstream = await raw_upstream(handler)
    gw = await start_gateway(upstream)
    started = time.monotonic()
    resp = await gw.post("/tools/echo/x", headers=auth(), data=b'{"a": 1}')
    await assert_error(resp, 502, "upstream_unreachable", retryable=True, upstream=upstream)
    assert time.monotonic() - started < 1.5  # refused at once, not after timeout_s (2 s)
    assert raw_upstream.calls == [1]  # tried once, never retried


# --- the response breaks off after it started -------------------------------------------------


async def _chunked_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_head(reader)
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"6\r\nhello \r\n6\r\nworld \r\n"
    )
    await writer.drain()
    await asyncio.sleep(0.05)


async def _chunked_then_reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _chunked_then_close(reader, writer)
    reset(writer)


async def _chunked_mid_chunk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_head(reader)
    writer.write(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"6\r\nhello \r\n100\r\nonly part of a chunk"
    )
    await writer.drain()
    await asyncio.sleep(0.05)


async def _short_content_length(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly twenty bytes...")
    await writer.drain()
    await asyncio.sleep(0.05)


BREAKS = [
    (_chunked_then_close, "chunked-then-close"),
    (_chunked_then_reset, "chunked-then-reset"),
    (_chunked_mid_chunk, "chunked-close-mid-chunk"),
    (_short_content_length, "content-length-short"),
]


@pytest.mark.parametrize("handler", [h for h, _ in BREAKS], ids=[i for _, i in BREAKS])
async def test_response_breaking_off_is_never_a_clean_response(
    raw_upstream, start_gateway, handler
):
    gw = await start_gateway(await raw_upstream(handler))
    resp = await gw.get("/tools/echo/x", headers=auth())
    assert resp.status == 200  # the headers had been passed on already
    assert UUID.match(resp.headers["X-Request-Id"])
    with pytest.raises(aiohttp.ClientPayloadError):
        await asyncio.wait_for(resp.read(), 3)
    metrics = await (await gw.admin.get("/metrics")).text()
    assert re.search(r'callgate_requests_total\{[^}]*outcome="stream_broken"[^}]*\} 1\.0', metrics)


async def hang_up_while_upstream_works(
    port: int, release: asyncio.Event, answered: asyncio.Event
) -> None:
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /tools/echo/slow HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {AGENT_TOKEN}\r\n\r\n".encode()
    )
    await writer.drain()
    await asyncio.sleep(0.2)  # the call is now waiting on the upstream
    writer.close()
    await writer.wait_closed()
    release.set()
    await asyncio.wait_for(answered.wait(), 3)


def slow_app() -> tuple[web.Application, asyncio.Event, asyncio.Event]:
    answered, release = asyncio.Event(), asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        answered.set()
        return web.json_response({"late": True})

    app = web.Application()
    app.router.add_get("/slow", slow)
    return app, release, answered


async def wait_for_outcome(metrics_of: Callable[[], Awaitable[str]], outcome: str) -> str:
    for _ in range(60):
        metrics = await metrics_of()
        if f'outcome="{outcome}"' in metrics:
            return metrics
        await asyncio.sleep(0.05)
    return metrics


async def test_agent_hanging_up_before_the_answer_is_counted_not_an_internal_error(
    tmp_path, start_upstream
):
    """As `callgate serve` runs it (no handler cancellation): the response cannot start."""
    app, release, answered = slow_app()
    config = make_config(tmp_path, await start_upstream(app))
    config = config.model_copy(
        update={
            "listen": config.listen.model_copy(update={"port": 0}),
            "admin": config.admin.model_copy(update={"port": 0}),
        }
    )
    runners, _svc = await start(config)
    try:
        agent_port = runners[0].addresses[0][1]
        admin_port = runners[1].addresses[0][1]

        async def metrics_of() -> str:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{admin_port}/metrics") as resp,
            ):
                return await resp.text()

        await hang_up_while_upstream_works(agent_port, release, answered)
        metrics = await wait_for_outcome(metrics_of, "stream_broken")
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
    assert re.search(r'callgate_requests_total\{[^}]*outcome="stream_broken"[^}]*\} 1\.0', metrics)
    assert 'outcome="internal_error"' not in metrics


async def test_agent_hanging_up_is_counted_with_handler_cancellation(start_upstream, start_gateway):
    """aiohttp's test server cancels the handler when the agent hangs up."""
    app, release, answered = slow_app()
    gw = await start_gateway(await start_upstream(app))
    await hang_up_while_upstream_works(gw.server.port, release, answered)

    async def metrics_of() -> str:
        return await (await gw.admin.get("/metrics")).text()

    metrics = await wait_for_outcome(metrics_of, "agent_disconnected")
    assert re.search(
        r'callgate_requests_total\{[^}]*outcome="agent_disconnected"[^}]*\} 1\.0', metrics
    )


# --- request bodies over the tool's limit ----------------------------------------------------


def counting_app() -> tuple[web.Application, list[bytes]]:
    bodies: list[bytes] = []

    @web.middleware
    async def take(request: web.Request, handler: Any) -> web.StreamResponse:
        # A middleware, not a route, so every request is counted, whatever its target.
        bodies.append(await request.read())
        return web.Response(text="taken")

    return web.Application(middlewares=[take]), bodies


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_body_over_limit_is_413_and_never_forwarded(start_upstream, start_gateway, framing):
    app, bodies = counting_app()
    upstream = await start_upstream(app)
    gw = await start_gateway(upstream, tool={"max_body_bytes": 10})
    data: Any = b"x" * 11 if framing == "content-length" else chunks(b"x" * 6, b"y" * 5)
    resp = await gw.post("/tools/echo/x", headers=auth(), data=data)
    await assert_error(resp, 413, "body_too_large", retryable=False, upstream=upstream)
    assert bodies == []


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_body_at_the_limit_is_forwarded(start_upstream, start_gateway, framing):
    app, bodies = counting_app()
    gw = await start_gateway(await start_upstream(app), tool={"max_body_bytes": 10})
    data: Any = b"x" * 10 if framing == "content-length" else chunks(b"x" * 6, b"y" * 4)
    resp = await gw.post("/tools/echo/x", headers=auth(), data=data)
    assert resp.status == 200
    assert await resp.text() == "taken"
    assert len(bodies) == 1 and len(bodies[0]) == 10


async def test_declared_length_over_limit_is_refused_without_waiting_for_the_body(
    start_upstream, start_gateway
):
    app, bodies = counting_app()
    gw = await start_gateway(await start_upstream(app), tool={"max_body_bytes": 10})
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.server.port)
    try:
        writer.write(
            b"POST /tools/echo/x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Authorization: Bearer {AGENT_TOKEN}\r\n".encode()
            + b"Content-Length: 1000000\r\n\r\n"
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 413 ")
    assert bodies == []
