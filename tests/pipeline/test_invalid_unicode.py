"""Text that is not valid Unicode never reaches the policy engine: regorus crashes the
whole process on a lone surrogate, and aiohttp turns header bytes that are not UTF-8 into
exactly that (surrogateescape), as json.loads does for an escaped half surrogate pair."""

from __future__ import annotations

import pytest
from aiohttp import web

from tests.support.gateway import auth
from tests.support.raw_http import raw_request


def counting_upstream() -> tuple[web.Application, list[str]]:
    calls: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        calls.append(request.path)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app, calls


@pytest.mark.parametrize(
    "header",
    [b"X-Agent-Session: \xff\xfe", b"X-Note: caf\xe9", b"X-Agent-Model: \xed\xa0\xbd"],
    ids=["invalid-bytes", "latin-1", "encoded-surrogate"],
)
async def test_a_header_that_is_not_utf8_is_refused(start_upstream, start_gateway, header):
    app, calls = counting_upstream()
    gw = await start_gateway(await start_upstream(app))
    port = gw.server.port
    request_line = b"GET /tools/echo/x HTTP/1.1\r\n" + header
    resp = await raw_request(port, request_line, auth())
    assert resp.status == 400
    assert resp.json()["error"]["code"] == "bad_request"
    assert "not valid UTF-8" in resp.json()["error"]["message"]
    # The gateway is still alive and serving.
    assert (await gw.get("/tools/echo/y", headers=auth())).status == 200
    assert calls == ["/y"]


@pytest.mark.parametrize(
    "body",
    [b'{"note": "\\ud83d"}', b'{"\\udc00": 1}', b'["ok", {"a": "x\\udfff"}]'],
    ids=["high-half", "low-half-in-key", "nested"],
)
async def test_a_json_body_with_half_a_surrogate_pair_is_refused(
    start_upstream, start_gateway, body
):
    app, calls = counting_upstream()
    gw = await start_gateway(await start_upstream(app))
    resp = await gw.post("/tools/echo/x", headers=auth(), data=body)
    assert resp.status == 400
    assert "surrogate" in (await resp.json())["error"]["message"]
    assert calls == []


async def test_whole_characters_pass(start_upstream, start_gateway):
    app, calls = counting_upstream()
    gw = await start_gateway(await start_upstream(app))
    resp = await gw.post(
        "/tools/echo/x",
        headers={**auth(), "X-Note": "café ☕"},
        data='{"emoji": "\\ud83d\\ude00", "plain": "😀"}'.encode(),
    )
    assert resp.status == 200
    assert calls == ["/x"]
