"""Issue 14, finding 5: an Idempotency-Key never sends a call twice after an unknown outcome.

A keyed call that may have reached the tool without its answer coming back whole (a
timeout, a connection broken after sending, an answer cut mid-stream, a gateway that died
while forwarding) keeps its key: a retry gets 409 `idempotency_outcome_unknown` naming the
first call, for the key's lifetime, unless the tool honours the key itself
(`tools[].idempotency_upstream`). Only a call that sent nothing (refused before forwarding,
connection refused) lets go of its key. See docs/limits.md, Idempotency-Key.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import Counter as Tally
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.support.gateway import auth, start_path_recorder
from tests.support.idempotency import Counter, config_for, keyed
from tests.support.stores import execute

SLOW_TOOL = {"timeout_s": 0.3}


async def code_of(resp: Any) -> str:
    body = await resp.json()
    return str(body["error"]["code"])


async def test_a_timed_out_call_is_never_sent_again_with_its_key(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    tool = Counter(delay_s=1.5)
    url = await start_upstream(tool.app())
    gw = await start_gateway(config=config_for(tmp_path, url, tool=SLOW_TOOL))
    first = await gw.post("/tools/echo/charges", headers=keyed("pay-1"), json={"eur": 5})
    assert (first.status, await code_of(first)) == (504, "upstream_timeout")
    first_id = first.headers["X-Request-Id"]
    for _ in range(2):  # the same answer every time, not a second charge
        retry = await gw.post("/tools/echo/charges", headers=keyed("pay-1"), json={"eur": 5})
        error = (await retry.json())["error"]
        assert (retry.status, error["code"], error["retryable"]) == (
            409,
            "idempotency_outcome_unknown",
            False,
        )
        assert first_id in error["message"]
        assert "new key" in error["message"]
    assert len(tool.calls) == 1


async def test_sixty_duplicates_of_a_call_slower_than_its_timeout_run_it_once(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    tool = Counter(delay_s=2.0)
    url = await start_upstream(tool.app())
    # Duplicates wait up to 3 s for the first: long enough to see it end.
    gw = await start_gateway(config=config_for(tmp_path, url, wait_s=3, tool=SLOW_TOOL))

    async def one() -> str:
        resp = await gw.post("/tools/echo/charges", headers=keyed("burst"), json={"eur": 9})
        return await code_of(resp)

    codes = Tally(await asyncio.gather(*(one() for _ in range(60))))
    assert len(tool.calls) == 1
    assert codes == {"upstream_timeout": 1, "idempotency_outcome_unknown": 59}


def cut_stream_app(calls: list[int]) -> web.Application:
    """A tool that starts its answer, then drops the connection."""

    async def handler(request: web.Request) -> web.StreamResponse:
        calls.append(1)
        response = web.StreamResponse(status=201)
        response.content_length = 1000
        await response.prepare(request)
        await response.write(b'{"charge": ')
        assert request.transport is not None
        request.transport.close()
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


async def test_an_answer_cut_mid_stream_is_an_unknown_outcome(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    calls: list[int] = []
    gw = await start_gateway(
        config=config_for(tmp_path, await start_upstream(cut_stream_app(calls)))
    )
    first = await gw.post("/tools/echo/c", headers=keyed("cut"), json={})
    first_id = first.headers["X-Request-Id"]
    with contextlib.suppress(aiohttp.ClientError):  # cut too, never a short body that looks whole
        await first.read()
    retry = await gw.post("/tools/echo/c", headers=keyed("cut"), json={})
    error = (await retry.json())["error"]
    assert (retry.status, error["code"]) == (409, "idempotency_outcome_unknown")
    assert first_id in error["message"]
    assert len(calls) == 1


async def test_a_refused_connection_sent_nothing_so_a_retry_runs(
    tmp_path: Path, start_gateway: Any
) -> None:
    # A port bound but not listening: connecting to it is refused, no byte reaches it.
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    port = held.getsockname()[1]
    tool = Counter()
    gw = await start_gateway(config=config_for(tmp_path, f"http://127.0.0.1:{port}"))
    try:
        refused = await gw.post("/tools/echo/c", headers=keyed("conn"), json={"eur": 1})
        error = (await refused.json())["error"]
        assert (refused.status, error["code"]) == (502, "upstream_unreachable")
        assert "nothing was sent" in error["message"]
    finally:
        held.close()
    server = TestServer(tool.app(), host="127.0.0.1", port=port)
    await server.start_server()
    try:
        retry = await gw.post("/tools/echo/c", headers=keyed("conn"), json={"eur": 1})
        assert (retry.status, await retry.json()) == (201, {"charge": 1})
        assert len(tool.calls) == 1
    finally:
        await server.close()


class SlowOnce(Counter):
    """Slower than the gateway's timeout on the first call only."""

    def app(self) -> web.Application:
        async def handler(request: web.Request) -> web.Response:
            self.calls.append((request.path, request.headers.get("Idempotency-Key", ""), b""))
            if len(self.calls) == 1:
                await asyncio.sleep(1.5)
            return web.json_response({"charge": 1}, status=201)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        return app


async def test_a_tool_that_honours_the_key_gets_the_retry_with_the_key(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    tool = SlowOnce()
    url = await start_upstream(tool.app())
    honours = {**SLOW_TOOL, "idempotency_upstream": True}
    gw = await start_gateway(config=config_for(tmp_path, url, tool=honours))
    first = await gw.post("/tools/echo/charges", headers=keyed("up-1"), json={"eur": 5})
    assert first.status == 504
    retry = await gw.post("/tools/echo/charges", headers=keyed("up-1"), json={"eur": 5})
    assert retry.status == 201
    assert [key for _path, key, _body in tool.calls] == ["up-1", "up-1"]


async def test_a_claim_whose_gateway_died_while_sending_is_not_sent_again(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    tool = Counter(delay_s=1.0)
    url = await start_upstream(tool.app())
    gw = await start_gateway(config=config_for(tmp_path, url, wait_s=3))
    first = asyncio.create_task(gw.post("/tools/echo/c", headers=keyed("dead"), json={}))
    while not tool.calls:
        await asyncio.sleep(0.02)
    first_id = (await gw.services.idempotency.get("bot", "dead")).owner
    # The claim's lease ran out: to another gateway on this store, its holder looks dead
    # (killed while the tool was running the call).
    await execute(gw.services.idempotency, "UPDATE idempotency SET lease_until = 0")
    duplicate = await gw.post("/tools/echo/c", headers=keyed("dead"), json={})
    error = (await duplicate.json())["error"]
    assert (duplicate.status, error["code"]) == (409, "idempotency_outcome_unknown")
    assert first_id in error["message"]
    assert (await first).status == 201
    assert len(tool.calls) == 1


async def test_an_unknown_outcome_is_kept_across_gateways_on_the_same_store(
    tmp_path: Path, start_upstream: Any
) -> None:
    from gateway.serve import build_apps

    tool = Counter(delay_s=1.5)
    config = config_for(tmp_path, await start_upstream(tool.app()), tool=SLOW_TOOL)

    async def call() -> tuple[int, str]:
        agent_app, _admin = build_apps(config)
        client = TestClient(TestServer(agent_app, host="127.0.0.1"))
        await client.start_server()
        try:
            resp = await client.post("/tools/echo/c", headers=keyed("r"), json={"eur": 1})
            return resp.status, await code_of(resp)
        finally:
            await client.close()

    assert await call() == (504, "upstream_timeout")
    assert await call() == (409, "idempotency_outcome_unknown")  # restarted, same store
    assert len(tool.calls) == 1


async def test_two_idempotency_keys_are_refused(tmp_path, start_upstream, start_gateway):
    """The gateway de-duplicates on one key; a tool that honours keys might read the other."""
    url, paths = await start_path_recorder(start_upstream)
    gw = await start_gateway(url, tool={"idempotency_upstream": True})
    resp = await gw.post(
        "/tools/echo/charges",
        headers=[*auth().items(), ("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
        json={},
    )
    assert resp.status == 400
    assert "one Idempotency-Key" in (await resp.json())["error"]["message"]
    assert paths == []
