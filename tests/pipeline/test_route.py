"""Routing: `/tools/<tool>/<path>` -> the tool's upstream, and no way out of it.

Escape attempts are sent over a raw socket, byte for byte, because HTTP clients normalise
paths (`..`, `//`, `\\`) before sending them. The upstream counts every call it gets.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from tests.support.gateway import OTHER_TOKEN, auth
from tests.support.raw_http import RawResponse, raw_request


def counting_app() -> tuple[web.Application, list[str]]:
    """An upstream that records the raw request target of every call it gets."""
    calls: list[str] = []

    @web.middleware
    async def anything(request: web.Request, handler: Any) -> web.StreamResponse:
        # A middleware, not a route, so even a target no route would match is counted.
        calls.append(request.raw_path)
        return web.Response(text=request.raw_path)

    return web.Application(middlewares=[anything]), calls


def assert_gateway_error(resp: RawResponse, status: int, code: str) -> None:
    assert resp.status == status, resp.body
    assert resp.headers["Content-Type"].startswith("application/json")
    error = resp.json()["error"]
    assert error["code"] == code
    assert error["request_id"] == resp.headers["X-Request-Id"]


# --- escapes: each one 400 bad_request, upstream never called ---------------------------------

ESCAPES = [
    ("/tools/echo/../x", "dotdot"),
    ("/tools/echo/..", "dotdot-at-end"),
    ("/tools/echo/a/../../x", "dotdot-nested"),
    ("/tools/echo/./x", "dot"),
    ("/tools/echo/a/.", "dot-at-end"),
    ("/tools/echo/a/%2e%2e/x", "encoded-dotdot-lower"),
    ("/tools/echo/%2E%2E/x", "encoded-dotdot-upper"),
    ("/tools/echo/.%2e/x", "half-encoded-dotdot"),
    ("/tools/echo/%2e./x", "half-encoded-dotdot-2"),
    ("/tools/echo/%2e/x", "encoded-dot"),
    ("/tools/echo//evil.example/x", "empty-segment-authority"),
    ("/tools/echo/a//b", "empty-segment-middle"),
    ("/tools/echo/a%2fb", "encoded-slash-lower"),
    ("/tools/echo/a%2Fb", "encoded-slash-upper"),
    ("/tools/echo/%2f%2fevil.example/x", "encoded-double-slash"),
    ("/tools/echo/a%5cb", "encoded-backslash-lower"),
    ("/tools/echo/a%5Cb", "encoded-backslash-upper"),
    ("/tools/echo/a\\b", "raw-backslash"),
    ("/tools/echo/\\\\evil.example/x", "raw-double-backslash"),
    ("/tools/echo/..\\x", "raw-backslash-dotdot"),
    ("/tools/echo/%252e%252e/x", "double-encoded-dotdot"),
    ("/tools/echo/a%252fb", "double-encoded-slash"),
    ("/tools/echo/a%255cb", "double-encoded-backslash"),
    ("/tools/echo/%25%32%65%25%32%65/x", "double-encoded-dotdot-fully"),
    ("/tools/echo/a%2500b", "double-encoded-nul"),
    ("/tools/echo/a%00b", "encoded-nul"),
    pytest.param("/tools/echo/a%0ab", id="encoded-newline"),
    pytest.param("/tools/echo/a%0d%0aX-Injected:%20yes", id="encoded-crlf"),
    ("/tools/echo/a%0db", "encoded-cr"),
    ("/tools/echo/a%09b", "encoded-tab"),
    ("/tools/echo/a%7fb", "encoded-del"),
    ("/tools/echo/%c0%ae%c0%ae/x", "overlong-utf8-dot"),
    ("/tools/echo/a%ffb", "invalid-utf8"),
    ("/tools/echo/%u002e%u002e/x", "iis-unicode-escape"),
    ("/tools/echo/a%zzb", "bad-percent-escape"),
    ("/tools/echo/a%", "trailing-percent"),
    ("/tools/echo/a%2", "truncated-percent"),
    ('/tools/echo/a"b', "raw-double-quote"),
    ("/tools/echo/a<b>", "raw-angle-brackets"),
    ("/tools/echo/a{b}", "raw-braces"),
    ("/tools/echo/a|b", "raw-pipe"),
    ("/tools/echo/a^b", "raw-caret"),
    ("/tools/echo/a`b", "raw-backtick"),
    ("/tools/echo/a?q={1}", "raw-brace-in-query"),
    ("/tools/echo/a?q=100%", "bad-percent-in-query"),
    ("/tools/echo/a#frag", "fragment"),
    ("/tools/echo/..;/x", "dotdot-with-path-parameter"),
    ("/tools/echo/.;/x", "dot-with-path-parameter"),
    ("/tools/echo/%2e%2e;x=1/y", "encoded-dotdot-with-path-parameter"),
    ("/tools/echo/..%3b/x", "dotdot-with-encoded-semicolon"),
    ("http://evil.example/tools/echo/x", "absolute-form"),
    ("http://127.0.0.1/tools/echo/x", "absolute-form-same-host"),
    ("https://evil.example:8443/tools/echo/x", "absolute-form-https"),
]


def table(rows: list[Any]) -> list[Any]:
    """(value, id) rows, and rows that already are pytest.param, -> pytest.param rows."""
    return [row if hasattr(row, "marks") else pytest.param(*row[:-1], id=row[-1]) for row in rows]


@pytest.mark.parametrize("target", table(ESCAPES))
async def test_path_escape_is_refused_and_never_forwarded(start_upstream, start_gateway, target):
    app, calls = counting_app()
    gw = await start_gateway(await start_upstream(app))
    resp = await raw_request(gw.server.port, f"GET {target} HTTP/1.1", auth())
    assert_gateway_error(resp, 400, "bad_request")
    assert resp.json()["error"]["retryable"] is False
    assert calls == []


@pytest.mark.parametrize("method", ["POST", "DELETE"], ids=["post", "delete"])
async def test_path_escape_is_refused_for_every_method(start_upstream, start_gateway, method):
    app, calls = counting_app()
    gw = await start_gateway(await start_upstream(app))
    headers = {**auth(), "Content-Length": "0"}
    resp = await raw_request(gw.server.port, f"{method} /tools/echo/a/../../x HTTP/1.1", headers)
    assert_gateway_error(resp, 400, "bad_request")
    assert calls == []


async def test_escape_with_a_base_path_never_leaves_it(start_upstream, start_gateway):
    app, calls = counting_app()
    gw = await start_gateway(await start_upstream(app) + "/api/v2")
    resp = await raw_request(gw.server.port, "GET /tools/echo/../../admin HTTP/1.1", auth())
    assert_gateway_error(resp, 400, "bad_request")
    assert calls == []


# --- what is forwarded, and where ----------------------------------------------------------

FORWARDED = [
    ("/tools/echo", "/", "tool-root-no-slash"),
    ("/tools/echo/", "/", "tool-root-slash"),
    ("/tools/echo/a/b", "/a/b", "plain"),
    ("/tools/echo/a/b/", "/a/b/", "trailing-slash-kept"),
    ("/tools/echo/hello%20world", "/hello%20world", "encoded-space"),
    ("/tools/echo/caf%C3%A9/%E2%9C%93", "/caf%C3%A9/%E2%9C%93", "utf8-upper-hex"),
    ("/tools/echo/caf%c3%a9", "/caf%c3%a9", "utf8-lower-hex-kept"),
    ("/tools/echo/%41%42c", "/%41%42c", "unreserved-encoded-kept"),
    ("/tools/echo/a+b/c~d/e-f_g.h", "/a+b/c~d/e-f_g.h", "unreserved-and-plus"),
    ("/tools/echo/v1/items:search", "/v1/items:search", "colon-segment"),
    ("/tools/echo/a;v=1/b@c!$&'()*,=", "/a;v=1/b@c!$&'()*,=", "sub-delims"),
    ("/tools/echo/...", "/...", "three-dots-is-a-name"),
    ("/tools/echo/.well-known/x", "/.well-known/x", "leading-dot-name"),
    ("/tools/echo/a..b", "/a..b", "dots-inside-a-name"),
    ("/tools/echo/%25", "/%25", "encoded-percent-alone"),
    ("/tools/echo/x?a=1&a=2&b=", "/x?a=1&a=2&b=", "query-kept"),
    ("/tools/echo/x?next=/../../etc", "/x?next=/../../etc", "dots-in-query-are-data"),
    ("/tools/echo?a=1", "/?a=1", "tool-root-with-query"),
]


@pytest.mark.parametrize(
    ("target", "expected"), [f[:2] for f in FORWARDED], ids=[f[2] for f in FORWARDED]
)
async def test_path_is_forwarded_exactly(start_upstream, start_gateway, target, expected):
    app, calls = counting_app()
    gw = await start_gateway(await start_upstream(app))
    resp = await raw_request(gw.server.port, f"GET {target} HTTP/1.1", auth())
    assert resp.status == 200, resp.body
    assert calls == [expected]


BASE_PATH = [
    ("/tools/echo", "/api/v2", "root-no-slash"),
    ("/tools/echo/", "/api/v2/", "root-slash"),
    ("/tools/echo/users/7", "/api/v2/users/7", "below"),
    ("/tools/echo/users/", "/api/v2/users/", "trailing-slash"),
    ("/tools/echo/q?x=%2F&y=1", "/api/v2/q?x=%2F&y=1", "query"),
]


@pytest.mark.parametrize("base", ["/api/v2", "/api/v2/"], ids=["base", "base-trailing-slash"])
@pytest.mark.parametrize(
    ("target", "expected"), [b[:2] for b in BASE_PATH], ids=[b[2] for b in BASE_PATH]
)
async def test_upstream_base_path_is_prefixed(
    start_upstream, start_gateway, base, target, expected
):
    app, calls = counting_app()
    gw = await start_gateway(await start_upstream(app) + base)
    resp = await raw_request(gw.server.port, f"GET {target} HTTP/1.1", auth())
    assert resp.status == 200, resp.body
    assert calls == [expected]


async def test_encoded_path_sent_by_a_client_arrives_as_sent(start_upstream, start_gateway):
    """The same through an HTTP client, with a URL it must not re-encode."""
    app, calls = counting_app()
    gw = await start_gateway(await start_upstream(app))
    url = URL(f"http://127.0.0.1:{gw.server.port}/tools/echo/a%20b/%C3%A9?q=%20", encoded=True)
    async with aiohttp.ClientSession() as session, session.get(url, headers=auth()) as resp:
        assert resp.status == 200
    assert calls == ["/a%20b/%C3%A9?q=%20"]


# --- tools, and who may ask ---------------------------------------------------------------

UNKNOWN = [
    ("/tools/payments/refunds", "unknown-tool"),
    ("/tools/ECHO/x", "tool-names-are-case-sensitive"),
    ("/tools/echo2/x", "tool-name-prefix"),
    ("/tools/", "no-tool-name"),
    ("/tools", "tools-without-slash"),
    ("/", "root"),
    ("/echo/x", "outside-tools"),
    ("/metrics", "admin-path-on-agent-listener"),
    ("//evil.example/tools/echo/x", "network-path-reference"),
    ("//tools/echo/x", "double-slash-before-tools"),
    ("/tools//echo/x", "empty-tool-name"),
    ("/tools/%65cho/x", "encoded-tool-name"),
    ("/tools/./echo/x", "dot-tool-name"),
    ("/tools/../tools/echo/x", "dotdot-tool-name"),
    ("/tools/echo%2fx", "encoded-slash-after-tool"),
]


@pytest.mark.parametrize("target", table(UNKNOWN))
async def test_unknown_tool_or_path_outside_tools_is_404(start_upstream, start_gateway, target):
    app, calls = counting_app()
    gw = await start_gateway(await start_upstream(app))
    resp = await raw_request(gw.server.port, f"GET {target} HTTP/1.1", auth())
    assert_gateway_error(resp, 404, "unknown_tool")
    assert calls == []


@pytest.mark.parametrize(
    "request_line",
    [
        pytest.param("OPTIONS * HTTP/1.1", id="asterisk-form"),
        pytest.param("CONNECT evil.example:443 HTTP/1.1", id="authority-form"),
    ],
)
async def test_target_outside_origin_form_is_404(start_upstream, start_gateway, request_line):
    app, calls = counting_app()
    gw = await start_gateway(await start_upstream(app))
    resp = await raw_request(gw.server.port, request_line, auth())
    assert_gateway_error(resp, 404, "unknown_tool")
    assert calls == []


PARSER_REFUSED = [
    (b"GET /tools/echo/caf\xc3\xa9 HTTP/1.1", "raw-utf8"),
    (b"GET /tools/echo/caf\xe9 HTTP/1.1", "raw-latin1"),
    (b"GET /tools/echo/a\tb HTTP/1.1", "raw-tab"),
    (b"GET /tools/echo/a\x00b HTTP/1.1", "raw-nul"),
    (b"GET /tools/echo/a\x7fb HTTP/1.1", "raw-del"),
    (b"GET /tools/echo/a b HTTP/1.1", "raw-space"),
    (b"GET /tools/echo/a?q=x y HTTP/1.1", "raw-space-in-query"),
    (b"GET /tools/echo/x\rHTTP/1.1", "bare-cr"),
    (b"GET tools/echo/x HTTP/1.1", "no-leading-slash"),
]


@pytest.mark.parametrize("request_line", table(PARSER_REFUSED))
async def test_target_the_http_parser_refuses_is_never_forwarded(
    start_upstream, start_gateway, request_line
):
    app, calls = counting_app()
    gw = await start_gateway(await start_upstream(app))
    resp = await raw_request(gw.server.port, request_line, auth())
    assert resp.status == 400
    assert calls == []


UNAUTHENTICATED = [
    ({}, "missing"),
    ({"Authorization": "Bearer not-a-known-token"}, "unknown-token"),
    ({"Authorization": "Bearer "}, "empty-token"),
    ({"Authorization": "Basic dGVzdC1hZ2VudC10b2tlbjo="}, "basic-scheme"),
    ({"Authorization": "test-agent-token"}, "no-scheme"),
    ({"X-Api-Key": "test-agent-token"}, "token-in-another-header"),
]


@pytest.mark.parametrize(
    "target",
    ["/tools/echo/x", "/tools/payments/x", "/tools/echo/../x"],
    ids=["known-tool", "unknown-tool", "escaping-path"],
)
@pytest.mark.parametrize(
    "headers", [h for h, _ in UNAUTHENTICATED], ids=[i for _, i in UNAUTHENTICATED]
)
async def test_unauthenticated_is_401_before_tool_lookup(
    start_upstream, start_gateway, target, headers
):
    app, calls = counting_app()
    gw = await start_gateway(await start_upstream(app))
    resp = await raw_request(gw.server.port, f"GET {target} HTTP/1.1", headers)
    assert_gateway_error(resp, 401, "unauthenticated")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert "payments" not in resp.json()["error"]["message"]
    assert calls == []


async def test_known_agent_without_permission_is_403_not_forwarded(start_upstream, start_gateway):
    app, calls = counting_app()
    gw = await start_gateway(await start_upstream(app))
    resp = await raw_request(gw.server.port, "GET /tools/echo/x HTTP/1.1", auth(OTHER_TOKEN))
    assert_gateway_error(resp, 403, "policy_denied")
    assert calls == []
