"""describe over real HTTP: the policy input document as the policy sees it.

The policy here denies every call with `json.marshal(input)` as its reason, so the 403
message is exactly the input document the engine received.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from yarl import URL

from tests.support.gateway import AGENT_TOKEN, auth

ECHO_INPUT = 'package gateway\n\nimport rego.v1\n\ndecision := {"allow": false, "reason": json.marshal(input)}\n'


@pytest.fixture
async def seen_input(tmp_path: Path, start_gateway):
    folder = tmp_path / "echo-policies"
    folder.mkdir()
    (folder / "gateway.rego").write_text(ECHO_INPUT)
    gw = await start_gateway(
        policy_dir=folder,
        tool={"credentials": {"header": "X-Tool-Key", "value": "tool-secret"}},
    )

    async def call(method: str, path: str, **kwargs: Any) -> tuple[dict[str, Any], str]:
        resp = await gw.request(method, URL(path, encoded=True), **kwargs)
        assert resp.status == 403
        body = await resp.json()
        return json.loads(body["error"]["message"]), resp.headers["X-Request-Id"]

    return call


async def test_full_input_document(seen_input) -> None:
    doc, request_id = await seen_input(
        "POST",
        "/tools/echo/v1/re%20funds?x=1&x=2&empty=&flag",
        headers={
            **auth(),
            "Content-Type": "application/json",
            "X-Agent-Session": "sess-42",
            "X-Agent-Model": "gpt-x-2026-10",
            "Cookie": "session=abc",
            "X-Api-Key": "k",
            "X-Tool-Key": "agent-sent-this",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "hop",
            "X-Custom": "kept",
        },
        data=b'{"amount": 1200, "currency": "EUR", "ok": true}',
    )
    assert doc["agent"] == {
        "id": "bot",
        "roles": ["caller"],
        "claims": {},
        "identity": {"kind": "token"},
    }
    assert doc["tool"] == {"name": "echo", "kind": "http"}
    assert doc["mcp"] is None
    request = doc["request"]
    assert request["method"] == "POST"
    assert request["path"] == "/v1/re funds"
    assert request["query"] == {"x": ["1", "2"], "empty": [""], "flag": [""]}
    assert request["body"] == {"amount": 1200, "currency": "EUR", "ok": True}
    assert request["size"] == len(b'{"amount": 1200, "currency": "EUR", "ok": true}')
    headers = request["headers"]
    assert headers["forwarded"] == "for=127.0.0.1;proto=http"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["content-type"] == "application/json"
    assert headers["x-custom"] == "kept"
    assert headers["x-agent-session"] == "sess-42"
    for secret in ("authorization", "cookie", "x-api-key", "x-tool-key", "connection", "x-hop"):
        assert secret not in headers
    assert AGENT_TOKEN not in json.dumps(doc)
    assert all(name == name.lower() for name in headers)
    context = doc["context"]
    assert context["request_id"] == request_id
    assert context["session"] == "sess-42"
    assert context["model"] == "gpt-x-2026-10"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", context["time"])


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/json", b'{"a": [1, 2.5, null, "\\u00e9"]}', {"a": [1, 2.5, None, "é"]}),
        ("application/merge-patch+json", b'{"a": 1}', {"a": 1}),
        ("application/json; charset=utf-8", b"[1, 2]", [1, 2]),
        (None, b'{"a": 1}', {"a": 1}),
        ("text/plain", b'{"a": 1}', {"a": 1}),
        ("text/plain", b"hello", None),
        ("text/plain", b"{not json", None),
        ("text/plain; charset=iso-8859-1", b"caf\xe9", None),
        ("text/plain; charset=iso-8859-1", b'{"a": 1}', {"a": 1}),
        ("application/octet-stream", b"\x00\x01", None),
    ],
    ids=[
        "json",
        "plus-json",
        "json-charset",
        "no-type",
        "json-declared-as-text",
        "text",
        "broken-text",
        "latin1-text",
        "latin1-that-reads-as-utf8",
        "binary",
    ],
)
async def test_body_is_parsed_whenever_it_is_json(seen_input, content_type, body, expected) -> None:
    headers = auth()
    if content_type:
        headers["Content-Type"] = content_type
    doc, _ = await seen_input(
        "POST", "/tools/echo/x", headers=headers, data=body, skip_auto_headers=["Content-Type"]
    )
    assert doc["request"]["body"] == expected
    assert doc["request"]["form"] is None
    assert doc["request"]["size"] == len(body)


async def test_no_body(seen_input) -> None:
    doc, _ = await seen_input("GET", "/tools/echo", headers=auth())
    assert doc["request"]["body"] is None
    assert doc["request"]["size"] == 0
    assert doc["request"]["path"] == "/"
    assert doc["context"]["session"] is None
    assert doc["context"]["model"] is None


async def test_repeated_headers_are_joined(seen_input) -> None:
    doc, _ = await seen_input(
        "GET", "/tools/echo/x", headers=[*auth().items(), ("X-Multi", "a"), ("X-Multi", "b")]
    )
    assert doc["request"]["headers"]["x-multi"] == "a, b"


async def test_query_values_are_decoded_exactly_once(seen_input) -> None:
    doc, _ = await seen_input("GET", "/tools/echo/x?c=%2561&d=a%20b&e=%26", headers=auth())
    assert doc["request"]["query"] == {"c": ["%61"], "d": ["a b"], "e": ["&"]}


@pytest.fixture
async def recording_gateway(start_upstream, start_gateway):
    seen: list[tuple[dict[str, str], bytes]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append((dict(request.headers), await request.read()))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    return await start_gateway(await start_upstream(app), tool={"timeout_s": 0.5}), seen


async def test_duplicate_json_keys_are_refused_not_forwarded(recording_gateway) -> None:
    gw, seen = recording_gateway
    resp = await gw.post(
        "/tools/echo/pay",
        headers={**auth(), "Content-Type": "application/json"},
        data=b'{"amount": 5000, "amount": 1}',
    )
    body = await resp.json()
    assert resp.status == 400
    assert body["error"]["code"] == "bad_request"
    assert "same key twice" in body["error"]["message"]
    assert seen == []


async def test_compressed_request_body_is_forwarded_decoded(recording_gateway) -> None:
    gw, seen = recording_gateway
    resp = await gw.post(
        "/tools/echo/pay",
        headers={**auth(), "Content-Type": "application/json", "Content-Encoding": "gzip"},
        data=gzip.compress(b'{"amount": 5}'),
    )
    assert resp.status == 200
    headers, body = seen[0]
    assert body == b'{"amount": 5}'
    assert "Content-Encoding" not in headers
    assert headers["Content-Length"] == str(len(body))


async def test_broken_compressed_body_is_bad_request(recording_gateway) -> None:
    gw, seen = recording_gateway
    resp = await gw.post(
        "/tools/echo/pay",
        headers={**auth(), "Content-Type": "application/json", "Content-Encoding": "gzip"},
        data=b"this is not gzip at all",
    )
    body = await resp.json()
    assert resp.status == 400
    assert body["error"]["code"] == "bad_request"
    assert "malformed" in body["error"]["message"]
    assert seen == []


async def test_body_that_does_not_arrive_in_time_is_bad_request(recording_gateway) -> None:
    gw, seen = recording_gateway
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.server.port)
    writer.write(
        b"POST /tools/echo/pay HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {AGENT_TOKEN}\r\n".encode()
        + b"Content-Length: 10\r\n\r\nab"
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.read(4096), 5)  # the tool's timeout_s is 0.5
    writer.close()
    assert head.startswith(b"HTTP/1.1 400"), head
    assert b"did not arrive within 0.5s" in head
    assert seen == []


async def test_compressed_body_is_limited_by_its_decompressed_size(
    start_upstream, start_gateway
) -> None:
    seen: list[bytes] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(await request.read())
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    gw = await start_gateway(await start_upstream(app), tool={"max_body_bytes": 1000})
    bomb = gzip.compress(b"0" * 100_000)
    assert len(bomb) < 1000
    resp = await gw.post(
        "/tools/echo/pay", headers={**auth(), "Content-Encoding": "gzip"}, data=bomb
    )
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "body_too_large"
    assert seen == []
