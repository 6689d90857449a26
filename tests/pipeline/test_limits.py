"""Rate limits, call budgets and the loop breaker over real HTTP: each refusal with its
code and headers, limits from the policy, per-tool overrides, and a failing limiter."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from limits.aio.storage import MemoryStorage

from gateway.config import Config, Limits, LoopLimit, Rate, SessionBudget
from gateway.limiter import Limit, Limiter
from gateway.services import open_limits
from tests.support.approvals import approval_config, approver_headers
from tests.support.gateway import OTHER_TOKEN, auth, make_config, recording_upstream

ALLOW_BOTH = """package gateway

import rego.v1

decision := {"allow": true, "rate_limits": writes} if input.agent.id in {"bot", "other"}

writes := [{"key": concat("", ["writes:", input.agent.id]), "limit": 2, "window_s": 60}] if {
    input.request.method == "POST"
} else := []
"""


def config_with(tmp_path: Path, url: str, defaults: Limits, tool_limits: Any) -> Config:
    policies = tmp_path / "limit-policies"
    policies.mkdir(exist_ok=True)
    (policies / "gateway.rego").write_text(ALLOW_BOTH)
    tool = {"limits": tool_limits} if tool_limits is not None else None
    config = make_config(tmp_path, url, policy_dir=policies, tool=tool)
    approvers = approval_config(tmp_path, url).approvers
    return config.model_copy(update={"limits": defaults, "approvers": approvers})


async def gateway(
    tmp_path, start_upstream, start_gateway, defaults: Limits, tool_limits: Any = None
):
    app, calls = recording_upstream()
    url = await start_upstream(app)
    config = config_with(tmp_path, url, defaults, tool_limits)
    return await start_gateway(config=config), calls


NO_LOOP = Limits(loop=None, session_budget=None)


async def test_a_rate_limit_refuses_with_retry_and_ratelimit_headers(
    tmp_path, start_upstream, start_gateway, limits_backend
):
    limits = NO_LOOP.model_copy(update={"per_agent": Rate(limit=3, window_s=60)})
    gw, calls = await gateway(tmp_path, start_upstream, start_gateway, limits_backend(limits))
    for i in range(3):
        assert (await gw.get(f"/tools/echo/{i}", headers=auth())).status == 200
    resp = await gw.get("/tools/echo/3", headers=auth())
    body = await resp.json()
    assert resp.status == 429
    assert body["error"]["code"] == "rate_limited"
    assert body["error"]["retryable"] is True
    assert "'agent'" in body["error"]["message"] and "3 calls per 60s" in body["error"]["message"]
    retry = int(resp.headers["Retry-After"])
    assert 1 <= retry <= 60
    assert resp.headers["RateLimit-Policy"] == '"agent";q=3;w=60'
    assert re.fullmatch(r'"agent";r=0;t=\d+', resp.headers["RateLimit"])
    assert (await gw.get("/tools/echo/x", headers=auth(OTHER_TOKEN))).status == 200
    assert len(calls) == 4  # three of bot's, one of other's


async def test_concurrent_checks_admit_exactly_the_limit(limits_backend):
    limiter, _stuck = open_limits(limits_backend(Limits()))  # as the gateway opens it
    limit = Limit("agent", "agent:bot", 5, 60)
    assert await limiter.check([limit]) is None  # starts the memory storage's expiry task
    await asyncio.sleep(0)  # which now holds the key's lock while it runs in a thread
    try:
        results = await asyncio.gather(*(limiter.check([limit]) for _ in range(20)))
    finally:
        await limiter.close()
    assert sum(result is None for result in results) == 4
    assert {r.limit.name for r in results if r is not None} == {"agent"}
    assert all(1 <= r.retry_after_s <= 60 for r in results if r is not None)


async def test_a_session_name_that_is_not_utf8_is_counted_and_listed(limits_backend):
    """aiohttp gives header bytes that are not UTF-8 as surrogates."""
    session = b"s-\xff".decode(errors="surrogateescape")
    limiter, stuck = open_limits(limits_backend(Limits()))
    limit = Limit("session", f"session:bot:{session}", 1, 60, kind="session")
    try:
        assert await limiter.check([limit]) is None
        assert await limiter.check([limit]) is not None
        assert await stuck.flag("bot", session, "budget_exhausted", 60) == 1
        assert [entry.session for entry in await stuck.current()] == [session]
    finally:
        await limiter.close()


async def test_concurrent_calls_admit_exactly_the_limit(
    tmp_path, start_upstream, start_gateway, limits_backend
):
    limits = NO_LOOP.model_copy(update={"per_agent": Rate(limit=5, window_s=60)})
    gw, calls = await gateway(tmp_path, start_upstream, start_gateway, limits_backend(limits))
    responses = await asyncio.gather(
        *(gw.get(f"/tools/echo/{i}", headers=auth()) for i in range(30))
    )
    assert sorted(resp.status for resp in responses) == [200] * 5 + [429] * 25
    assert len(calls) == 5


async def test_a_tool_overrides_the_default_limits(
    tmp_path, start_upstream, start_gateway, limits_backend
):
    limits = NO_LOOP.model_copy(update={"per_tool": Rate(limit=100, window_s=60)})
    gw, _calls = await gateway(
        tmp_path, start_upstream, start_gateway, limits_backend(limits), {"per_tool": {"limit": 1}}
    )
    assert (await gw.get("/tools/echo/a", headers=auth())).status == 200
    resp = await gw.get("/tools/echo/b", headers=auth(OTHER_TOKEN))
    assert resp.status == 429
    assert resp.headers["RateLimit-Policy"] == '"tool";q=1;w=60'


async def test_limits_from_the_policy(tmp_path, start_upstream, start_gateway, limits_backend):
    gw, calls = await gateway(tmp_path, start_upstream, start_gateway, limits_backend(NO_LOOP))
    for i in range(2):
        assert (await gw.post(f"/tools/echo/w{i}", headers=auth(), data=b"x")).status == 200
    resp = await gw.post("/tools/echo/w2", headers=auth(), data=b"x")
    assert resp.status == 429
    assert resp.headers["RateLimit-Policy"] == '"writes:bot";q=2;w=60'
    assert (await gw.get("/tools/echo/r", headers=auth())).status == 200  # reads are free
    assert (await gw.post("/tools/echo/w", headers=auth(OTHER_TOKEN), data=b"x")).status == 200
    assert len(calls) == 4


BUILTIN_NAMES = """package gateway

import rego.v1

decision := {"allow": true, "rate_limits": [{"key": key, "limit": 1, "window_s": 60}]} if {
    key := trim_prefix(input.request.path, "/")
}
"""


async def test_policy_limits_named_like_built_in_ones_are_rate_limits(
    tmp_path, start_upstream, start_gateway, limits_backend
):
    app, calls = recording_upstream()
    config = config_with(tmp_path, await start_upstream(app), limits_backend(NO_LOOP), None)
    (config.policy.path / "gateway.rego").write_text(BUILTIN_NAMES)
    gw = await start_gateway(config=config)
    headers = {**auth(), "X-Agent-Session": "s-named"}
    for name in ("loop", "session"):
        assert (await gw.get(f"/tools/echo/{name}", headers=headers)).status == 200
        resp = await gw.get(f"/tools/echo/{name}", headers=headers)
        body = await resp.json()
        assert (resp.status, body["error"]["code"]) == (429, "rate_limited"), name
        assert f"rate limit '{name}'" in body["error"]["message"]
        assert resp.headers["RateLimit-Policy"] == f'"{name}";q=1;w=60'
    stuck = await gw.admin.get("/api/v1/sessions?state=stuck", headers=approver_headers("bob"))
    assert (await stuck.json())["sessions"] == []
    assert len(calls) == 2


async def test_the_loop_breaker_stops_the_same_call_repeated(
    tmp_path, start_upstream, start_gateway, limits_backend
):
    limits = Limits(loop=LoopLimit(max_repeats=3, window_s=60), session_budget=None)
    gw, calls = await gateway(tmp_path, start_upstream, start_gateway, limits_backend(limits))
    headers = {**auth(), "X-Agent-Session": "s-loop"}
    for _ in range(3):
        assert (await gw.put("/tools/echo/retry", headers=headers, data=b"same")).status == 200
    resp = await gw.put("/tools/echo/retry", headers=headers, data=b"same")
    body = await resp.json()
    assert resp.status == 429
    assert body["error"]["code"] == "loop_detected"
    assert "stop repeating it" in body["error"]["message"]
    assert "Retry-After" in resp.headers
    # A changed call is a different call.
    assert (await gw.put("/tools/echo/retry", headers=headers, data=b"other")).status == 200
    assert len(calls) == 4
    stuck = await gw.admin.get("/api/v1/sessions?state=stuck", headers=approver_headers("bob"))
    assert [(s["session"], s["reason"]) for s in (await stuck.json())["sessions"]] == [
        ("s-loop", "loop_detected")
    ]


async def test_a_tool_can_turn_the_loop_breaker_off(
    tmp_path, start_upstream, start_gateway, limits_backend
):
    limits = Limits(loop=LoopLimit(max_repeats=2, window_s=60), session_budget=None)
    gw, calls = await gateway(
        tmp_path, start_upstream, start_gateway, limits_backend(limits), {"loop": None}
    )
    for _ in range(5):
        assert (await gw.get("/tools/echo/poll", headers=auth())).status == 200
    assert len(calls) == 5


async def test_a_session_budget_flags_the_session_as_stuck(
    tmp_path, start_upstream, start_gateway, limits_backend
):
    limits = Limits(loop=None, session_budget=SessionBudget(max_calls=2, window_s=3600))
    gw, calls = await gateway(tmp_path, start_upstream, start_gateway, limits_backend(limits))
    session = {**auth(), "X-Agent-Session": "sess-42"}
    for i in range(2):
        assert (await gw.get(f"/tools/echo/{i}", headers=session)).status == 200
    resp = await gw.get("/tools/echo/2", headers=session)
    body = await resp.json()
    assert (resp.status, body["error"]["code"]) == (429, "budget_exhausted")
    assert resp.headers["RateLimit-Policy"] == '"session";q=2;w=3600'
    other = {**auth(), "X-Agent-Session": "sess-43"}
    assert (await gw.get("/tools/echo/3", headers=other)).status == 200
    assert (await gw.get("/tools/echo/4", headers=auth())).status == 200  # no session header
    stuck = await gw.admin.get("/api/v1/sessions?state=stuck", headers=approver_headers("bob"))
    (entry,) = (await stuck.json())["sessions"]
    assert (entry["agent"], entry["session"], entry["reason"]) == (
        "bot",
        "sess-42",
        "budget_exhausted",
    )
    metrics = await (await gw.admin.get("/metrics")).text()
    assert "callgate_sessions_stuck 1.0" in metrics
    assert (await gw.admin.get("/api/v1/sessions", headers=auth())).status == 401
    assert len(calls) == 4


def stuck_gauge(metrics: str) -> float:
    (line,) = [line for line in metrics.splitlines() if line.startswith("callgate_sessions_stuck")]
    return float(line.split()[1])


async def test_the_stuck_sessions_gauge_follows_refusals_without_a_reader(
    tmp_path, start_upstream, start_gateway, limits_backend
):
    limits = Limits(loop=None, session_budget=SessionBudget(max_calls=1, window_s=1))
    gw, _calls = await gateway(tmp_path, start_upstream, start_gateway, limits_backend(limits))

    async def exhaust(session: str) -> None:
        headers = {**auth(), "X-Agent-Session": session}
        assert (await gw.get("/tools/echo/a", headers=headers)).status == 200
        assert (await gw.get("/tools/echo/b", headers=headers)).status == 429

    await exhaust("s-1")
    await exhaust("s-2")
    assert stuck_gauge(await (await gw.admin.get("/metrics")).text()) == 2
    await asyncio.sleep(2.2)  # both refusals are over: flagging the next drops them
    await exhaust("s-3")
    assert stuck_gauge(await (await gw.admin.get("/metrics")).text()) == 1
    stuck = await gw.admin.get("/api/v1/sessions?state=stuck", headers=approver_headers("bob"))
    assert [s["session"] for s in (await stuck.json())["sessions"]] == ["s-3"]


class UnreachableStorage(MemoryStorage):
    """Stands for the limiter's store being down (a Redis that does not answer)."""

    async def get_moving_window(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("the limiter's store does not answer")

    async def acquire_entry(self, *args: Any, **kwargs: Any) -> bool:
        raise ConnectionError("the limiter's store does not answer")


async def test_a_failing_limiter_fails_closed_unless_told_otherwise(
    tmp_path, start_upstream, start_gateway
):
    limits = NO_LOOP.model_copy(update={"per_agent": Rate(limit=100)})
    gw, calls = await gateway(tmp_path, start_upstream, start_gateway, limits)
    gw.services.limiter = Limiter(UnreachableStorage())
    resp = await gw.get("/tools/echo/x", headers=auth())
    body = await resp.json()
    assert (resp.status, body["error"]["code"]) == (429, "rate_limited")
    assert "could not check its rate limits" in body["error"]["message"]
    assert resp.headers["Retry-After"] == "1"
    assert calls == []
    gw.services.config = gw.services.config.model_copy(
        update={"limits": limits.model_copy(update={"on_error": "allow"})}
    )
    assert (await gw.get("/tools/echo/x", headers=auth())).status == 200


async def test_calls_without_a_session_share_one_budget_per_agent(
    tmp_path, start_upstream, start_gateway, limits_backend
):
    """No X-Agent-Session does not mean no budget: the agent's session-less calls are
    budgeted together, and listed as stuck as `(no session)`."""
    limits = Limits(loop=None, session_budget=SessionBudget(max_calls=2, window_s=3600))
    gw, calls = await gateway(tmp_path, start_upstream, start_gateway, limits_backend(limits))
    for i in range(2):
        assert (await gw.get(f"/tools/echo/{i}", headers=auth())).status == 200
    resp = await gw.get("/tools/echo/2", headers=auth())
    body = await resp.json()
    assert (resp.status, body["error"]["code"]) == (429, "budget_exhausted")
    # Another agent's session-less calls, and this agent's named sessions, have their own.
    assert (await gw.get("/tools/echo/3", headers=auth(OTHER_TOKEN))).status == 200
    named = {**auth(), "X-Agent-Session": "sess-1"}
    assert (await gw.get("/tools/echo/4", headers=named)).status == 200
    stuck = await gw.admin.get("/api/v1/sessions?state=stuck", headers=approver_headers("bob"))
    (entry,) = (await stuck.json())["sessions"]
    assert (entry["agent"], entry["session"], entry["reason"]) == (
        "bot",
        "(no session)",
        "budget_exhausted",
    )
    assert len(calls) == 4
