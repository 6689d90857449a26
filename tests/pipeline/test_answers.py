"""What of a tool's answer reaches the agent (docs/answers-and-pins.md): capped at the tool's
max_response_bytes, and scrubbed of its credential, its ${ENV} values and its
redact_response patterns; through a real upstream that writes its answer in chunks."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from gateway.config import parse_config
from tests.support.audit import audit_source, call_records, wait_for_records
from tests.support.gateway import AGENT_TOKEN, ALLOW_ALL_REGO, TOOL_SECRET, auth, sha

CAP = 1000
CARD = "4111 1111 1111 1111"
API_KEY = "sk_live_" + "a1b2c3d4e5f6g7h8i9j0"
PATTERNS = [r"\b(?:\d[ -]?){13,19}\b", r"sk_live_[A-Za-z0-9]{20,}"]

Writer = Callable[[web.StreamResponse], Awaitable[None]]


def chunked_app(
    write: Writer, content_type: str = "text/plain", headers: dict[str, str] | None = None
) -> web.Application:
    """A tool whose every answer is written by `write`, chunked (no Content-Length)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": content_type, **(headers or {})})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await write(response)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


def in_pieces(*pieces: bytes, pause_s: float = 0.05) -> Writer:
    """Write each piece on its own, with a pause between (a chunk each on the wire)."""

    async def write(response: web.StreamResponse) -> None:
        for piece in pieces:
            await response.write(piece)
            await asyncio.sleep(pause_s)

    return write


def metric(gw: Any, name: str, **labels: str) -> float:
    return gw.services.metrics.registry.get_sample_value(name, labels) or 0.0


async def outcome_of(gw: Any, request_id: str) -> dict[str, Any]:
    source = audit_source(gw)
    await wait_for_records(
        source, lambda rs: any(r["kind"] == "outcome" and r["request_id"] == request_id for r in rs)
    )
    return next(r for r in call_records(source, request_id) if r["kind"] == "outcome")


# Caps


async def test_a_content_length_over_the_cap_is_refused_before_the_answer_starts(
    start_upstream, start_gateway
):
    async def large(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * (CAP + 1), content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/big", large)
    gw = await start_gateway(await start_upstream(app), tool={"max_response_bytes": CAP})
    resp = await gw.get("/tools/echo/big", headers=auth())
    assert resp.status == 502
    error = (await resp.json())["error"]
    assert (error["code"], error["retryable"]) == ("upstream_response_too_large", False)
    assert f"of {CAP + 1} bytes" in error["message"]
    outcome = await outcome_of(gw, resp.headers["X-Request-Id"])
    assert (outcome["status"], outcome["upstream_status"]) == (502, 200)
    assert outcome["error"] == "upstream_response_too_large"
    assert metric(gw, "callgate_responses_too_large_total", tool="echo", source="call") == 1
    assert (
        metric(
            gw,
            "callgate_requests_total",
            tool="echo",
            agent="bot",
            outcome="upstream_response_too_large",
        )
        == 1
    )
    # At the cap exactly, the answer passes whole.
    ok = await start_gateway(await start_upstream(app), tool={"max_response_bytes": CAP + 1})
    resp = await ok.get("/tools/echo/big", headers=auth())
    assert resp.status == 200 and len(await resp.read()) == CAP + 1


async def test_a_chunked_answer_over_the_cap_is_cut_and_never_looks_whole(
    start_upstream, start_gateway
):
    pieces = [b"a" * 400] * 5  # 2000 bytes, no Content-Length
    app = chunked_app(in_pieces(*pieces), "application/octet-stream")
    gw = await start_gateway(await start_upstream(app), tool={"max_response_bytes": CAP})
    resp = await gw.get("/tools/echo/stream", headers=auth())
    assert resp.status == 200  # the answer had started
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async for chunk in resp.content.iter_any():
            received += chunk
    assert received == b"a" * 800  # whole chunks up to the cap, nothing past it
    outcome = await outcome_of(gw, resp.headers["X-Request-Id"])
    assert outcome["error"] == "upstream_response_too_large"
    assert outcome["bytes"] == 800
    assert metric(gw, "callgate_responses_too_large_total", tool="echo", source="call") == 1


async def test_an_answer_under_the_cap_streams_whole(start_upstream, start_gateway):
    app = chunked_app(in_pieces(*[b"b" * 300] * 3, pause_s=0.01), "application/octet-stream")
    gw = await start_gateway(await start_upstream(app), tool={"max_response_bytes": CAP})
    resp = await gw.get("/tools/echo/stream", headers=auth())
    assert (resp.status, await resp.read()) == (200, b"b" * 900)


async def test_an_event_stream_over_the_cap_is_cut(start_upstream, start_gateway):
    events = [f"data: {json.dumps({'n': i, 'pad': 'p' * 200})}\n\n".encode() for i in range(10)]
    app = chunked_app(in_pieces(*events, pause_s=0.01), "text/event-stream")
    gw = await start_gateway(await start_upstream(app), tool={"max_response_bytes": CAP})
    resp = await gw.get("/tools/echo/events", headers=auth())
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async for chunk in resp.content.iter_any():
            received += chunk
    assert 0 < len(received) <= CAP
    assert received.startswith(events[0])


# Scrubbing


async def test_the_credential_echoed_in_headers_and_body_is_redacted(start_upstream, start_gateway):
    async def echo_auth(request: web.Request) -> web.Response:
        token = request.headers["Authorization"]
        return web.json_response(
            {"you_sent": token, "token": token.removeprefix("Bearer ")},
            headers={"X-Debug-Auth": token, "X-Other": "plain"},
        )

    app = web.Application()
    app.router.add_get("/whoami", echo_auth)
    gw = await start_gateway(await start_upstream(app))
    resp = await gw.get("/tools/echo/whoami", headers=auth())
    body = await resp.read()
    assert resp.status == 200
    assert TOOL_SECRET.encode() not in body
    assert json.loads(body) == {"you_sent": "[redacted]", "token": "[redacted]"}
    assert resp.headers["X-Debug-Auth"] == "[redacted]"
    assert resp.headers["X-Other"] == "plain"
    # The body changed length: the tool's Content-Length is not passed on.
    assert resp.headers.get("Content-Length") in (None, str(len(body)))
    outcome = await outcome_of(gw, resp.headers["X-Request-Id"])
    assert outcome["redacted"] == {"credential": 3}
    assert metric(gw, "callgate_response_redactions_total", tool="echo", kind="credential") == 3


async def test_a_secret_split_between_two_chunks_is_still_caught(start_upstream, start_gateway):
    half = len(TOOL_SECRET) // 2
    text = f"before {TOOL_SECRET} after".encode()
    cut = len(b"before ") + half
    app = chunked_app(in_pieces(text[:cut], text[cut:], pause_s=0.2))
    gw = await start_gateway(await start_upstream(app))
    resp = await gw.get("/tools/echo/split", headers=auth())
    assert await resp.read() == b"before [redacted] after"


async def test_text_up_to_a_line_break_is_not_held_back(start_upstream, start_gateway):
    """An event's end reaches the agent at once, though a secret may follow in a later
    chunk: no match spans a line break."""
    go = asyncio.Event()

    async def write(response: web.StreamResponse) -> None:
        await response.write(b'data: {"step": 1}\n\n')
        await go.wait()
        await response.write(f"data: {TOOL_SECRET}\n\n".encode())

    gw = await start_gateway(await start_upstream(chunked_app(write, "text/event-stream")))
    resp = await gw.get("/tools/echo/events", headers=auth())
    assert await asyncio.wait_for(resp.content.readexactly(19), 2) == b'data: {"step": 1}\n\n'
    go.set()
    assert await resp.read() == b"data: [redacted]\n\n"


@pytest.mark.parametrize("pause_s", [0, 0.05])
async def test_redact_response_patterns_catch_card_numbers_and_api_keys(
    start_upstream, start_gateway, pause_s
):
    text = json.dumps({"card": CARD, "key": API_KEY, "order": 42}).encode()
    # Split inside the card number and inside the key.
    at_card, at_key = text.index(b"1111") + 2, text.index(b"sk_live_") + 5
    pieces = (text[:at_card], text[at_card:at_key], text[at_key:])
    app = chunked_app(in_pieces(*pieces, pause_s=pause_s), "application/json")
    gw = await start_gateway(await start_upstream(app), tool={"redact_response": PATTERNS})
    resp = await gw.get("/tools/echo/order", headers=auth())
    assert json.loads(await resp.read()) == {"card": "[redacted]", "key": "[redacted]", "order": 42}
    outcome = await outcome_of(gw, resp.headers["X-Request-Id"])
    assert outcome["redacted"] == {"pattern": 2}


async def test_binary_answers_pass_untouched(start_upstream, start_gateway):
    payload = f"raw {TOOL_SECRET} {CARD}".encode()

    async def binary(request: web.Request) -> web.Response:
        return web.Response(body=payload, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/blob", binary)
    gw = await start_gateway(await start_upstream(app), tool={"redact_response": PATTERNS})
    resp = await gw.get("/tools/echo/blob", headers=auth())
    assert await resp.read() == payload
    assert resp.headers["Content-Length"] == str(len(payload))


async def test_a_gzip_answer_is_asked_unencoded_and_decoded_to_be_scrubbed(
    start_upstream, start_gateway
):
    """The gateway asks for `identity`; a tool that compresses anyway is decoded."""
    accepted: list[str | None] = []
    plain = (f"token={TOOL_SECRET};" * 200).encode()

    async def gz(request: web.Request) -> web.Response:
        accepted.append(request.headers.get("Accept-Encoding"))
        return web.Response(
            body=gzip.compress(plain),
            headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"},
        )

    app = web.Application()
    app.router.add_get("/gz", gz)
    gw = await start_gateway(await start_upstream(app))
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        resp = await session.get(
            gw.make_url("/tools/echo/gz"), headers={**auth(), "Accept-Encoding": "gzip"}
        )
        raw = await resp.read()
    assert accepted == ["identity"]
    assert "Content-Encoding" not in resp.headers
    assert raw == b"token=[redacted];" * 200


async def test_an_encoding_that_cannot_be_scrubbed_is_refused(start_upstream, start_gateway):
    async def br(request: web.Request) -> web.Response:
        return web.Response(
            body=b"\x0b\x02\x80secret",
            headers={"Content-Encoding": "br", "Content-Type": "text/plain"},
        )

    app = web.Application()
    app.router.add_get("/br", br)
    gw = await start_gateway(await start_upstream(app))
    resp = await gw.get("/tools/echo/br", headers=auth())
    assert resp.status == 502
    error = (await resp.json())["error"]
    assert error["code"] == "upstream_unreachable" and "'br'" in error["message"]


async def test_env_values_of_the_tools_config_are_scrubbed(
    tmp_path: Path, start_upstream, start_gateway
):
    """The credential and every other ${ENV} value in the tool's entry: a token the
    upstream echoes alone, without its `Bearer`."""
    token = "env-borne-token-0123456789"

    async def echo(request: web.Request) -> web.Response:
        return web.Response(text=f"got {request.headers['X-Api-Key']} and {token[:6]}")

    app = web.Application()
    app.router.add_get("/k", echo)
    upstream = await start_upstream(app)
    policy = tmp_path / "policies"
    policy.mkdir()
    (policy / "gateway.rego").write_text(ALLOW_ALL_REGO)
    tree = {
        "policy": {"path": str(policy)},
        "agents": [{"id": "bot", "token_sha256": sha(AGENT_TOKEN), "roles": ["caller"]}],
        "tools": [
            {
                "name": "echo",
                "upstream": upstream,
                "credentials": {"header": "X-Api-Key", "value": "${API_TOKEN}"},
            }
        ],
    }
    config = parse_config(yaml.safe_dump(tree), tmp_path, {"API_TOKEN": token})
    gw = await start_gateway(config=config)
    resp = await gw.get("/tools/echo/k", headers=auth())
    assert await resp.text() == "got [redacted] and env-bo"


async def test_nothing_to_scrub_leaves_the_answer_as_it_came(start_upstream, start_gateway):
    """No credentials, no patterns: the body and its Content-Length pass unchanged."""

    async def plain(request: web.Request) -> web.Response:
        return web.Response(text=f"echo {TOOL_SECRET}")

    app = web.Application()
    app.router.add_get("/p", plain)
    gw = await start_gateway(await start_upstream(app), tool={"credentials": None})
    resp = await gw.get("/tools/echo/p", headers=auth())
    assert await resp.text() == f"echo {TOOL_SECRET}"
    assert resp.headers["Content-Length"] == str(len(f"echo {TOOL_SECRET}"))
