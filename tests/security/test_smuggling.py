"""Request smuggling probes that held, kept as regressions (docs/security.md).

Each probe sends ambiguous framing on a raw connection, with a second request hidden
where one parser would see a body and another a new request. Whatever the gateway
answers, the tool must never see the hidden request, and never a request on behalf of an
agent that was not authenticated.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.support.gateway import AGENT_TOKEN, start_path_recorder

HIDDEN = b"GET /tools/echo/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
AUTH = f"Authorization: Bearer {AGENT_TOKEN}\r\n".encode()


def head(*lines: bytes) -> bytes:
    return b"POST /tools/echo/x HTTP/1.1\r\nHost: x\r\n" + AUTH + b"".join(lines) + b"\r\n"


PROBES = [
    (
        "cl-and-te",
        head(b"Content-Length: 4\r\n", b"Transfer-Encoding: chunked\r\n") + b"0\r\n\r\n" + HIDDEN,
    ),
    (
        "te-and-cl",
        head(b"Transfer-Encoding: chunked\r\n", b"Content-Length: 40\r\n") + b"0\r\n\r\n" + HIDDEN,
    ),
    ("two-lengths", head(b"Content-Length: 0\r\n", b"Content-Length: 44\r\n") + HIDDEN),
    ("length-list", head(b"Content-Length: 0, 44\r\n") + HIDDEN),
    ("length-plus", head(b"Content-Length: +44\r\n") + HIDDEN),
    ("te-xchunked", head(b"Transfer-Encoding: xchunked\r\n") + b"0\r\n\r\n" + HIDDEN),
    (
        "te-chunked-identity",
        head(b"Transfer-Encoding: chunked, identity\r\n") + b"0\r\n\r\n" + HIDDEN,
    ),
    (
        "te-twice",
        head(b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: identity\r\n")
        + b"0\r\n\r\n"
        + HIDDEN,
    ),
    ("te-space-before-colon", head(b"Transfer-Encoding : chunked\r\n") + b"0\r\n\r\n" + HIDDEN),
    (
        "te-obs-fold",
        head(b"X-A: 1\r\n", b"Transfer-Encoding:\r\n chunked\r\n") + b"0\r\n\r\n" + HIDDEN,
    ),
    (
        "chunk-size-0x",
        head(b"Transfer-Encoding: chunked\r\n") + b"0x2c\r\n" + HIDDEN + b"\r\n0\r\n\r\n",
    ),
    (
        "chunk-size-overflow",
        head(b"Transfer-Encoding: chunked\r\n")
        + b"10000000000000002c\r\n"
        + HIDDEN
        + b"\r\n0\r\n\r\n",
    ),
    ("chunk-bare-lf", head(b"Transfer-Encoding: chunked\r\n") + b"2c\n" + HIDDEN + b"\n0\n\n"),
    (
        "bare-lf-head",
        b"POST /tools/echo/x HTTP/1.1\nHost: x\n"
        + AUTH.replace(b"\r\n", b"\n")
        + b"Content-Length: 0\n\n"
        + HIDDEN,
    ),
    (
        "http10-no-length",
        b"POST /tools/echo/x HTTP/1.0\r\n" + AUTH + b"Connection: keep-alive\r\n\r\n" + HIDDEN,
    ),
]


@pytest.fixture
async def gateway_and_tool(start_upstream, start_gateway):
    url, paths = await start_path_recorder(start_upstream)
    return await start_gateway(url), paths


@pytest.mark.parametrize("probe", [p[1] for p in PROBES], ids=[p[0] for p in PROBES])
async def test_a_hidden_request_never_reaches_the_tool(gateway_and_tool, probe: bytes) -> None:
    gw, paths = gateway_and_tool
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.server.port)
    try:
        writer.write(probe)
        await writer.drain()
        answered = b""
        try:
            async with asyncio.timeout(1.5):  # bounded: the gateway may wait for more body
                while chunk := await reader.read(65536):
                    answered += chunk
        except TimeoutError:
            pass
    finally:
        writer.close()
    statuses = [
        line.split(b" ")[1] for line in answered.split(b"\r\n") if line.startswith(b"HTTP/1.")
    ]
    # aiohttp's parser refuses every ambiguous framing; HTTP/1.0 without a length has no body.
    assert statuses == ([b"200"] if probe.startswith(b"POST /tools/echo/x HTTP/1.0") else [b"400"])
    # The hidden request carries no agent token: if the gateway parsed it as a request of its
    # own it answered 401 and sent nothing; the tool never sees it in any case.
    assert not [path for path in paths if "smuggled" in path]
    assert len(paths) <= 1
