"""Findings 2 and 3: header names with `_`, and forwarding headers an agent forges.

A WSGI or CGI tool reads `X_HTTP_Method_Override` as `HTTP_X_HTTP_METHOD_OVERRIDE`, the
same as the dash form the policy refuses; tools trust `X-Forwarded-For` and its kin for
IP allow-lists, host routing and URL rewriting. Neither reaches a tool from an agent
(docs/security.md). The default policy's own Rego tests refuse the `_` forms too.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web

from tests.support.gateway import auth

FORGED = [
    ("X-Forwarded-For", "10.0.0.1"),
    ("X-Forwarded-Host", "admin.internal"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Port", "443"),
    ("X-Forwarded-Prefix", "/admin"),
    ("Forwarded", "for=10.0.0.1;host=admin.internal;proto=https"),
    ("X-Real-IP", "10.0.0.1"),
    ("X-Client-IP", "10.0.0.1"),
    ("True-Client-IP", "10.0.0.1"),
    ("X-Original-URL", "/admin/delete-all"),
    ("X-Rewrite-URL", "/admin/delete-all"),
]


@pytest.fixture
async def recorded(start_upstream):
    seen: list[list[tuple[str, str]]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append([(name.lower(), value) for name, value in request.headers.items()])
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    return await start_upstream(app), seen


async def test_underscore_override_never_reaches_the_tool(recorded, start_gateway) -> None:
    upstream, seen = recorded
    gw = await start_gateway(upstream)
    resp = await gw.post(
        "/tools/echo/tickets",
        headers={**auth(), "X_HTTP_Method_Override": "DELETE", "X_Custom": "1", "X-Kept": "1"},
    )
    assert resp.status == 200
    names = [name for name, _ in seen[0]]
    assert "x-kept" in names
    assert not [name for name in names if "_" in name]


async def test_forged_forwarding_headers_are_replaced_by_the_gateways(
    recorded, start_gateway
) -> None:
    upstream, seen = recorded
    gw = await start_gateway(upstream)
    resp = await gw.get("/tools/echo/x", headers=[*auth().items(), *FORGED])
    assert resp.status == 200
    sent: dict[str, list[str]] = {}
    for name, value in seen[0]:
        sent.setdefault(name, []).append(value)
    assert sent["x-forwarded-for"] == ["127.0.0.1"]
    assert sent["x-forwarded-proto"] == ["http"]
    assert sent["forwarded"] == ["for=127.0.0.1;proto=http"]
    for name, _ in FORGED:
        assert "10.0.0.1" not in sent.get(name.lower(), [])
        assert "/admin/delete-all" not in sent.get(name.lower(), [])
    for name in ("x-forwarded-host", "x-forwarded-port", "x-forwarded-prefix", "x-real-ip"):
        assert name not in sent


async def test_strip_sends_no_forwarding_headers(recorded, start_gateway) -> None:
    upstream, seen = recorded
    gw = await start_gateway(upstream, tool={"forwarded_headers": "strip"})
    resp = await gw.get("/tools/echo/x", headers=[*auth().items(), *FORGED])
    assert resp.status == 200
    names = {name for name, _ in seen[0]}
    assert not names & {name.lower() for name, _ in FORGED}


async def test_the_agents_host_is_not_passed_on_as_a_forwarded_host(
    recorded, start_gateway
) -> None:
    """Tools route on a forwarded host: the Host an agent sends is its own choice."""
    upstream, seen = recorded
    gw = await start_gateway(upstream)
    resp = await gw.get("/tools/echo/x", headers={**auth(), "Host": "admin.internal"})
    assert resp.status == 200
    sent = dict(seen[0])
    assert "x-forwarded-host" not in sent
    assert sent["forwarded"] == "for=127.0.0.1;proto=http"
    assert "admin.internal" not in str(seen[0])


async def test_the_policy_sees_the_headers_the_tool_gets(tmp_path, start_gateway) -> None:
    folder = tmp_path / "echo"
    folder.mkdir()
    (folder / "gateway.rego").write_text(
        'package gateway\n\ndecision := {"allow": false, "reason": json.marshal(input.request.headers)}\n'
    )
    gw = await start_gateway(policy_dir=folder)
    resp = await gw.get("/tools/echo/x", headers=[*auth().items(), *FORGED, ("X_Y", "1")])
    headers: dict[str, Any] = json.loads((await resp.json())["error"]["message"])
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert "x_y" not in headers
    assert "x-real-ip" not in headers


async def test_an_unknown_expectation_is_refused_as_json_and_never_forwarded(
    recorded, start_gateway
) -> None:
    upstream, seen = recorded
    gw = await start_gateway(upstream)
    resp = await gw.get("/tools/echo/x", headers={**auth(), "Expect": "0"})
    assert resp.status == 417
    error = (await resp.json())["error"]
    assert (error["code"], error["retryable"]) == ("expectation_failed", False)
    assert resp.headers["X-Request-Id"]
    assert seen == []


async def test_expect_100_continue_still_sends_the_body_on(recorded, start_gateway) -> None:
    upstream, seen = recorded
    gw = await start_gateway(upstream)
    resp = await gw.post("/tools/echo/tickets", headers=auth(), json={"title": "t"}, expect100=True)
    assert resp.status == 200
    assert len(seen) == 1
