"""describe over real HTTP: the policy input document as the policy sees it.

The policy here denies every call with `json.marshal(input)` as its reason, so the 403
message is exactly the input document the engine received.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from tests.conftest import AGENT_TOKEN, auth

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
    assert doc["agent"] == {"id": "bot", "roles": ["caller"]}
    assert doc["tool"] == {"name": "echo", "kind": "http"}
    assert doc["mcp"] is None
    request = doc["request"]
    assert request["method"] == "POST"
    assert request["path"] == "/v1/re funds"
    assert request["query"] == {"x": ["1", "2"], "empty": [""], "flag": [""]}
    assert request["body"] == {"amount": 1200, "currency": "EUR", "ok": True}
    assert request["size"] == len(b'{"amount": 1200, "currency": "EUR", "ok": true}')
    headers = request["headers"]
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
        ("text/plain", b'{"a": 1}', None),
        ("application/json", b"{not json", None),
        ("application/json", b'{"a": NaN}', None),
        ("application/json", b"\xff\xfe", None),
        ("application/octet-stream", b"\x00\x01", None),
    ],
    ids=[
        "json",
        "plus-json",
        "json-charset",
        "no-type",
        "text",
        "broken",
        "nan",
        "not-utf8",
        "binary",
    ],
)
async def test_body_is_json_only_when_it_is_json(seen_input, content_type, body, expected) -> None:
    headers = auth()
    if content_type:
        headers["Content-Type"] = content_type
    doc, _ = await seen_input(
        "POST", "/tools/echo/x", headers=headers, data=body, skip_auto_headers=["Content-Type"]
    )
    assert doc["request"]["body"] == expected
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
