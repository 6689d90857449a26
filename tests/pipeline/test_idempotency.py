"""Idempotency-Key over real HTTP: replays without calling the tool, mismatches,
in-flight duplicates, required keys, restarts, expiry, and the interplay with approvals."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.config import Limits, LoopLimit, SessionBudget
from gateway.pipeline import idempotency
from gateway.serve import build_apps
from gateway.store import migrate
from gateway.store.idempotency import IdempotencyStore
from tests.support.approvals import approval_config
from tests.support.audit import wait_for_records
from tests.support.gateway import auth
from tests.support.idempotency import Counter, config_for, keyed
from tests.support.stores import execute

# Each test runs on a SQLite store and on a PostgreSQL one.
pytestmark = pytest.mark.usefixtures("store_url")


async def gateway(tmp_path, start_upstream, start_gateway, counter: Counter, **settings: Any):
    url = await start_upstream(counter.app())
    return await start_gateway(config=config_for(tmp_path, url, **settings))


async def test_a_replay_returns_the_first_answer_without_calling_the_tool(
    tmp_path, start_upstream, start_gateway
):
    tool = Counter()
    gw = await gateway(tmp_path, start_upstream, start_gateway, tool)
    first = await gw.post("/tools/echo/charges", headers=keyed("charge-1"), json={"eur": 5})
    assert first.status == 201
    assert "Idempotent-Replayed" not in first.headers
    again = await gw.post("/tools/echo/charges", headers=keyed("charge-1"), json={"eur": 5})
    assert again.status == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["X-Charge"] == "1"
    assert await again.json() == {"charge": 1}
    assert again.headers["X-Request-Id"] != first.headers["X-Request-Id"]
    assert len(tool.calls) == 1
    assert tool.calls[0][1] == ""  # the key is the gateway's unless the tool honours it
    replay_id = again.headers["X-Request-Id"]
    records = await wait_for_records(
        gw.services.audit.path, lambda rs: any(r.get("request_id") == replay_id for r in rs)
    )
    (record,) = [r for r in records if r.get("request_id") == replay_id]
    assert (record["kind"], record["decision"], record["code"]) == ("decision", "allow", "replayed")


async def test_the_key_reaches_a_tool_that_honours_it(tmp_path, start_upstream, start_gateway):
    tool = Counter()
    upstream = {"idempotency_upstream": True}
    gw = await gateway(tmp_path, start_upstream, start_gateway, tool, tool=upstream)
    await gw.post("/tools/echo/charges", headers=keyed("charge-1"), json={"eur": 5})
    assert tool.calls[0][1] == "charge-1"


async def test_the_same_key_for_another_request_is_422(tmp_path, start_upstream, start_gateway):
    tool = Counter()
    gw = await gateway(tmp_path, start_upstream, start_gateway, tool)
    await gw.post("/tools/echo/charges", headers=keyed("k"), json={"eur": 5})
    for path, body in (("/tools/echo/charges", {"eur": 6}), ("/tools/echo/refunds", {"eur": 5})):
        resp = await gw.post(path, headers=keyed("k"), json=body)
        assert resp.status == 422
        assert (await resp.json())["error"]["code"] == "idempotency_key_reused"
    assert len(tool.calls) == 1


async def test_twenty_concurrent_duplicates_call_the_tool_once(
    tmp_path, start_upstream, start_gateway
):
    tool = Counter(delay_s=0.3)
    gw = await gateway(tmp_path, start_upstream, start_gateway, tool)

    async def one() -> tuple[int, str, bytes]:
        resp = await gw.post("/tools/echo/charges", headers=keyed("burst"), json={"eur": 9})
        return resp.status, resp.headers["X-Charge"], await resp.read()

    results = await asyncio.gather(*(one() for _ in range(20)))
    assert len(tool.calls) == 1
    assert set(results) == {(201, "1", b'{"charge": 1}')}


async def test_a_duplicate_that_waits_too_long_gets_409(tmp_path, start_upstream, start_gateway):
    tool = Counter(delay_s=1.0)
    gw = await gateway(tmp_path, start_upstream, start_gateway, tool, wait_s=0.2)
    first = asyncio.create_task(gw.post("/tools/echo/slow", headers=keyed("s"), json={}))
    await asyncio.sleep(0.2)
    resp = await gw.post("/tools/echo/slow", headers=keyed("s"), json={})
    body = await resp.json()
    assert (resp.status, body["error"]["code"]) == (409, "idempotency_in_flight")
    assert body["error"]["retryable"] is True
    assert (await first).status == 201
    assert len(tool.calls) == 1


async def test_a_tool_can_require_keys_on_writes(tmp_path, start_upstream, start_gateway):
    tool = Counter()
    gw = await gateway(
        tmp_path, start_upstream, start_gateway, tool, tool={"idempotency": "required"}
    )
    resp = await gw.post("/tools/echo/charges", headers=auth(), json={})
    body = await resp.json()
    assert (resp.status, body["error"]["code"]) == (428, "idempotency_key_required")
    assert "Idempotency-Key" in body["error"]["message"]
    assert (await gw.get("/tools/echo/charges", headers=auth())).status == 201
    bad = await gw.post("/tools/echo/charges", headers=keyed("x" * 300), json={})
    assert bad.status == 400
    assert len(tool.calls) == 1


async def test_a_call_that_got_no_answer_frees_its_key(tmp_path, start_gateway):
    gw = await start_gateway(config=config_for(tmp_path, "http://127.0.0.1:9"))
    for _ in range(2):  # nothing answered: nothing to replay, so the retry runs for real
        resp = await gw.post("/tools/echo/x", headers=keyed("k2"), json={})
        assert resp.status == 502
        assert "Idempotent-Replayed" not in resp.headers


async def test_keys_survive_a_restart_and_expire(tmp_path, start_upstream):
    tool = Counter()
    config = config_for(tmp_path, await start_upstream(tool.app()), ttl_s=1)

    async def call() -> Any:
        agent_app, _admin = build_apps(config)
        client = TestClient(TestServer(agent_app, host="127.0.0.1"))
        await client.start_server()
        try:
            resp = await client.post("/tools/echo/c", headers=keyed("r"), json={"eur": 1})
            return resp.status, resp.headers.get("Idempotent-Replayed"), await resp.json()
        finally:
            await client.close()

    assert await call() == (201, None, {"charge": 1})
    assert await call() == (201, "true", {"charge": 1})  # another process, same store
    await asyncio.sleep(1.2)
    assert await call() == (201, None, {"charge": 2})  # the key expired
    assert len(tool.calls) == 2


async def test_a_parked_call_maps_its_key_to_the_action(tmp_path, start_upstream, start_gateway):
    tool = Counter()
    gw = await start_gateway(config=approval_config(tmp_path, await start_upstream(tool.app())))
    ids = set()
    for _ in range(3):
        resp = await gw.post("/tools/echo/refunds", headers=keyed("refund-1"), json={"eur": 5})
        assert resp.status == 202
        ids.add((await resp.json())["action_id"])
    assert len(ids) == 1
    assert len(await gw.services.actions.find()) == 1


def chunked_app(calls: list[int]) -> web.Application:
    """A tool that answers in chunks (Transfer-Encoding: chunked, no Content-Length)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        calls.append(1)
        response = web.StreamResponse(status=201, headers={"X-Charge": str(len(calls))})
        response.enable_chunked_encoding()
        response.content_type = "application/json"
        await response.prepare(request)
        await response.write(b'{"charge": ')
        await response.write(str(len(calls)).encode() + b"}")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


async def test_a_chunked_answer_replays_as_valid_http(tmp_path, start_upstream, start_gateway):
    calls: list[int] = []
    gw = await start_gateway(config=config_for(tmp_path, await start_upstream(chunked_app(calls))))
    first = await gw.post("/tools/echo/c", headers=keyed("chunky"), json={})
    assert (first.status, await first.read()) == (201, b'{"charge": 1}')
    assert first.headers["Transfer-Encoding"] == "chunked"
    stored = await gw.services.idempotency.get("bot", "chunky")
    names = {name.lower() for name, _value in stored.response["headers"]}
    assert names == {"x-charge", "content-type"}  # no framing, Date or Server of that answer
    again = await gw.post("/tools/echo/c", headers=keyed("chunky"), json={})
    assert (again.status, await again.read()) == (201, b'{"charge": 1}')
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Transfer-Encoding" not in again.headers
    assert again.headers["Content-Length"] == "13"
    assert again.headers.getall("Date") == [again.headers["Date"]]
    assert (again.headers["X-Charge"], again.headers["Content-Type"]) == ("1", "application/json")
    assert len(calls) == 1


def slow_stream_app(calls: list[int], chunks: int, pause_s: float) -> web.Application:
    async def handler(request: web.Request) -> web.StreamResponse:
        calls.append(1)
        response = web.StreamResponse(status=201)
        await response.prepare(request)
        for _ in range(chunks):
            await response.write(b"x")
            await asyncio.sleep(pause_s)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


async def test_a_call_streaming_longer_than_its_lease_keeps_its_key(
    tmp_path, start_upstream, start_gateway, monkeypatch
):
    # The lease is the tool's timeout (1 s here) plus the margin (none here); the answer
    # streams for 2.4 s, pausing well under the timeout.
    monkeypatch.setattr(idempotency, "LEASE_MARGIN_S", 0.0)
    calls: list[int] = []
    url = await start_upstream(slow_stream_app(calls, chunks=8, pause_s=0.3))
    gw = await start_gateway(config=config_for(tmp_path, url, wait_s=0.1, tool={"timeout_s": 1}))
    first = asyncio.create_task(gw.post("/tools/echo/c", headers=keyed("long"), json={}))
    await asyncio.sleep(1.6)
    duplicate = await gw.post("/tools/echo/c", headers=keyed("long"), json={})
    assert (duplicate.status, (await duplicate.json())["error"]["code"]) == (
        409,
        "idempotency_in_flight",
    )
    answered = await first
    assert (answered.status, await answered.read()) == (201, b"x" * 8)
    replay = await gw.post("/tools/echo/c", headers=keyed("long"), json={})
    assert (replay.headers["Idempotent-Replayed"], await replay.read()) == ("true", b"x" * 8)
    assert len(calls) == 1


async def test_an_answer_is_not_kept_over_a_claim_taken_over(
    tmp_path, start_upstream, start_gateway, caplog
):
    tool = Counter(delay_s=0.5)
    honours = {"idempotency_upstream": True}  # else a sent claim is never taken over
    gw = await gateway(tmp_path, start_upstream, start_gateway, tool, tool=honours)
    store = gw.services.idempotency
    first = asyncio.create_task(gw.post("/tools/echo/c", headers=keyed("t"), json={}))
    await asyncio.sleep(0.2)
    # Another gateway found the claim's lease run out (this one looked dead) and took it.
    await execute(store, "UPDATE idempotency SET lease_until = 0")
    taken = await store.claim(
        "bot", "t", "theirs", "other-gateway", lease_s=60, ttl_s=600, resend=True
    )
    assert taken is None
    assert (await first).status == 201
    assert (await store.get("bot", "t")).owner == "other-gateway"
    assert (await store.get("bot", "t")).response is None
    assert "the answer was not kept for replays" in caplog.text


async def test_a_waiting_duplicate_checks_the_request_again(
    tmp_path, start_upstream, start_gateway
):
    tool = Counter()
    gw = await gateway(tmp_path, start_upstream, start_gateway, tool, wait_s=3)
    store = gw.services.idempotency
    await gw.post("/tools/echo/charges", headers=keyed("probe"), json={"eur": 5})
    same = (await store.get("bot", "probe")).fingerprint
    # The same request is in flight on another gateway.
    assert await store.claim("bot", "K", same, "A", lease_s=60, ttl_s=600) is None
    waiting = asyncio.create_task(
        gw.post("/tools/echo/charges", headers=keyed("K"), json={"eur": 5})
    )
    await asyncio.sleep(0.3)
    # It got no answer and let go; another request with the same key was then answered.
    await store.release("bot", "K", "A")
    assert await store.claim("bot", "K", "another", "C", lease_s=60, ttl_s=600) is None
    assert await store.answer(
        "bot", "K", "C", {"status": 200, "headers": [], "body": "", "too_large": False}
    )
    resp = await waiting
    assert (resp.status, (await resp.json())["error"]["code"]) == (422, "idempotency_key_reused")
    assert len(tool.calls) == 1


async def test_a_key_is_not_reused_across_parked_and_direct_calls(
    tmp_path, start_upstream, start_gateway
):
    tool = Counter()
    gw = await start_gateway(config=approval_config(tmp_path, await start_upstream(tool.app())))
    parked = await gw.post("/tools/echo/refunds", headers=keyed("p"), json={"eur": 5})
    assert parked.status == 202
    direct = await gw.get("/tools/echo/balance", headers=keyed("p"))
    assert (direct.status, (await direct.json())["error"]["code"]) == (
        422,
        "idempotency_key_reused",
    )
    assert (await gw.get("/tools/echo/balance", headers=keyed("d"))).status == 201
    parked = await gw.post("/tools/echo/refunds", headers=keyed("d"), json={"eur": 5})
    assert (parked.status, (await parked.json())["error"]["code"]) == (
        422,
        "idempotency_key_reused",
    )
    assert len(await gw.services.actions.find()) == 1
    assert len(tool.calls) == 1


async def test_repeats_of_a_parked_call_skip_limits_and_the_loop_breaker(
    tmp_path, start_upstream, start_gateway
):
    tool = Counter()
    config = approval_config(tmp_path, await start_upstream(tool.app()))
    limits = Limits(
        loop=LoopLimit(max_repeats=2, window_s=60),
        session_budget=SessionBudget(max_calls=3, window_s=60),
    )
    gw = await start_gateway(config=config.model_copy(update={"limits": limits}))
    headers = {**keyed("again"), "X-Agent-Session": "s-parked"}
    ids = set()
    for _ in range(8):
        resp = await gw.post("/tools/echo/refunds", headers=headers, json={"eur": 5})
        assert resp.status == 202
        ids.add((await resp.json())["action_id"])
    assert len(ids) == 1
    # The first call was counted, the repeats were not: two more calls fit the budget.
    session = {**auth(), "X-Agent-Session": "s-parked"}
    for i in range(2):
        assert (await gw.get(f"/tools/echo/{i}", headers=session)).status == 201
    resp = await gw.get("/tools/echo/x", headers=session)
    assert (resp.status, (await resp.json())["error"]["code"]) == (429, "budget_exhausted")


async def test_a_repeat_of_a_held_parked_call_gets_its_action_at_once(
    tmp_path, start_upstream, start_gateway
):
    tool = Counter()
    gw = await start_gateway(config=approval_config(tmp_path, await start_upstream(tool.app())))
    held = {**keyed("held"), "Prefer": "wait=3"}
    first = asyncio.create_task(gw.post("/tools/echo/refunds", headers=held, json={"eur": 5}))
    await asyncio.sleep(0.3)
    started = asyncio.get_running_loop().time()
    again = await gw.post("/tools/echo/refunds", headers=keyed("held"), json={"eur": 5})
    assert again.status == 202
    assert asyncio.get_running_loop().time() - started < 1
    assert (await first).status == 202
    assert (await again.json())["action_id"] == (await (await first).json())["action_id"]


async def test_a_claim_taken_over_before_it_was_sent_sends_nothing(store_url):
    store = IdempotencyStore(store_url)
    await store.open()
    try:
        assert await store.claim("bot", "k", "f", "A", lease_s=60, ttl_s=600) is None
        # A's gateway stalled before forwarding; its lease ran out, and B took the key.
        await execute(store, "UPDATE idempotency SET lease_until = 0")
        assert await store.claim("bot", "k", "f", "B", lease_s=60, ttl_s=600) is None
        assert not await store.sending("bot", "k", "A", lease_s=60)  # A must not send now
        assert await store.sending("bot", "k", "B", lease_s=60)
        # B stalls after sending: its lapsed claim is an unknown outcome, not a free key.
        await execute(store, "UPDATE idempotency SET lease_until = 0")
        found = await store.claim("bot", "k", "f", "C", lease_s=60, ttl_s=600)
        assert found is not None and found.owner == "B"
        assert found.outcome_unknown == "gateway_stopped"
    finally:
        await store.close()


async def test_a_store_from_before_the_sent_mark_is_upgraded(tmp_path):
    path = tmp_path / "idempotency.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE idempotency (agent TEXT NOT NULL, key TEXT NOT NULL, "
            "fingerprint TEXT NOT NULL, owner TEXT NOT NULL, lease_until REAL NOT NULL, "
            "expires_at REAL NOT NULL, response TEXT, PRIMARY KEY (agent, key))"
        )
        db.execute("INSERT INTO idempotency VALUES ('bot', 'old', 'f', 'A', 0, 9e12, NULL)")
    await migrate.upgrade(migrate.sqlite_url(path), migrate.STORE)
    store = IdempotencyStore(path)
    await store.open()
    try:
        found = await store.get("bot", "old")
        assert found is not None and not found.sent and found.outcome_unknown is None
        # A claim from before the upgrade lapsed: taken over as it always was.
        assert await store.claim("bot", "old", "f", "B", lease_s=60, ttl_s=600) is None
    finally:
        await store.close()


async def test_a_store_failing_after_sending_leaves_the_agent_its_answer(
    tmp_path, start_upstream, start_gateway
):
    store: list[IdempotencyStore] = []

    async def handler(request: web.Request) -> web.Response:
        await store[0].close()  # the store is gone once the call was sent
        await asyncio.sleep(1)
        return web.json_response({"charge": 1}, status=201)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    url = await start_upstream(app)
    gw = await start_gateway(config=config_for(tmp_path, url, tool={"timeout_s": 0.3}))
    store.append(gw.services.idempotency)
    resp = await gw.post("/tools/echo/c", headers=keyed("gone"), json={})
    assert (resp.status, (await resp.json())["error"]["code"]) == (504, "upstream_timeout")
    await store[0].open()
    found = await store[0].get("bot", "gone")
    # Left to run out its lease: then retries get the unknown outcome, never a resend.
    assert found is not None and found.sent and found.response is None
