"""limits: the loop breaker, the session's call budget and the rate limits.

Counts the call against: the loop breaker (the same agent sending the same call, method,
tool, target and body, more than `limits.loop.max_repeats` times within its window), the
budget of its `X-Agent-Session` (calls without one share one budget per agent, listed as
the session `(no session)`), the configured per-agent, per-tool and per-agent-and-tool
rates (a tool's `limits` replace the defaults they set) and the decision's `rate_limits`.
A repeat of a call parked for approval, found by its Idempotency-Key, is not counted.
Refuses with 429 `loop_detected`, `budget_exhausted` (the session is then listed as stuck)
or `rate_limited`, each with `Retry-After`, `RateLimit-Policy` and `RateLimit`. When the
limiter itself fails, refuses with 429 `rate_limited` unless `limits.on_error` is `allow`.
"""

from __future__ import annotations

import logging

from gateway import fingerprint
from gateway.call import Call
from gateway.errors import ErrorCode, GatewayError
from gateway.limiter import LOOP, SESSION, Exceeded, Limit, StorageFailing
from gateway.observability import tracing
from gateway.pipeline import hooks
from gateway.services import Services

log = logging.getLogger(__name__)

# How the session-less calls of an agent are listed among stuck sessions. Their budget is
# counted under a key of its own, so a session named like this does not share their
# budget (only their line in the stuck list).
NO_SESSION = "(no session)"


def _limits(call: Call, svc: Services) -> list[Limit]:
    assert call.agent is not None and call.tool is not None and call.decision is not None
    agent, tool = call.agent.id, call.tool.name
    config = svc.config.limits.overridden_by(call.tool.limits)
    found = []
    if config.loop is not None and hooks.of(call).loop_counted(call):
        repeat = fingerprint.of_repeat(call)
        found.append(
            Limit(
                "loop",
                f"loop:{agent}:{tool}:{repeat}",
                config.loop.max_repeats,
                config.loop.window_s,
                kind=LOOP,
            )
        )
    session = call.request.headers.get("X-Agent-Session")
    if config.session_budget is not None:
        budget = config.session_budget
        found.append(
            Limit(
                "session",
                f"session:{agent}:{session}" if session else f"no-session:{agent}",
                budget.max_calls,
                budget.window_s,
                kind=SESSION,
            )
        )
    for name, rate, key in (
        ("agent", config.per_agent, f"agent:{agent}"),
        ("tool", config.per_tool, f"tool:{tool}"),
        ("agent_tool", config.per_agent_tool, f"agent_tool:{agent}:{tool}"),
    ):
        if rate is not None:
            found.append(Limit(name, key, rate.limit, rate.window_s))
    for rate_limit in call.decision.rate_limits:
        found.append(
            Limit(
                rate_limit.key,
                f"policy:{rate_limit.key}",
                int(rate_limit.limit),
                rate_limit.window_s,
            )
        )
    return found


def _sf_string(text: str) -> str:
    """A structured-field string (RFC 8941) of printable ASCII."""
    cleaned = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in text)
    return f'"{cleaned}"'


def _refusal(exceeded: Exceeded) -> GatewayError:
    limit, retry = exceeded.limit, exceeded.retry_after_s
    window = f"{limit.window_s:g}s"
    name = _sf_string(limit.name)
    headers = {
        "Retry-After": str(retry),
        "RateLimit-Policy": f"{name};q={limit.limit};w={max(1, round(limit.window_s))}",
        "RateLimit": f"{name};r=0;t={retry}",
    }
    if limit.kind == LOOP:
        return GatewayError(
            ErrorCode.LOOP_DETECTED,
            f"you sent this exact call {limit.limit} times within {window}: stop repeating it. "
            "If it failed, read its error and change the call, or stop and tell the user; "
            f"the same call is refused for {retry}s",
            headers=headers,
        )
    if limit.kind == SESSION:
        return GatewayError(
            ErrorCode.BUDGET_EXHAUSTED,
            f"this session has used its budget of {limit.limit} calls per {window}; an "
            f"operator has been shown it. Stop and report to the user (retry in {retry}s)",
            headers=headers,
        )
    return GatewayError(
        ErrorCode.RATE_LIMITED,
        f"rate limit '{limit.name}' reached: at most {limit.limit} calls per {window}; "
        f"retry after {retry}s",
        headers=headers,
    )


async def run(call: Call, svc: Services) -> None:
    if call.action_id is not None:  # the repeat of a parked call (idempotency): not counted
        return
    with tracing.stage(svc.tracing, "callgate.limits"):
        await _check(call, svc)


async def _check(call: Call, svc: Services) -> None:
    limits = _limits(call, svc)
    if not limits:
        return
    try:
        exceeded = await svc.limiter.check(limits)
    except Exception as exc:
        if not isinstance(exc, StorageFailing):  # that failure was logged when it happened
            log.exception("rate limiter failed", extra={"request_id": call.request_id})
        assert call.tool is not None
        if svc.config.limits.overridden_by(call.tool.limits).on_error == "allow":
            return
        raise GatewayError(
            ErrorCode.RATE_LIMITED,
            "the gateway could not check its rate limits, so nothing was sent; retry shortly",
            headers={"Retry-After": "1"},
        ) from None
    if exceeded is not None:
        await _flag_stuck(call, svc, exceeded)
        raise _refusal(exceeded)


async def _flag_stuck(call: Call, svc: Services, exceeded: Exceeded) -> None:
    """A session refused for its budget or by the loop breaker is shown to operators, and
    counted in callgate_sessions_stuck right away (not only when someone lists them)."""
    reasons = {LOOP: ErrorCode.LOOP_DETECTED, SESSION: ErrorCode.BUDGET_EXHAUSTED}
    reason = reasons.get(exceeded.limit.kind)
    if reason is None or call.agent is None:
        return
    session = call.request.headers.get("X-Agent-Session") or NO_SESSION
    try:
        stuck = await svc.stuck.flag(call.agent.id, session, reason.value, exceeded.retry_after_s)
    except Exception:  # the call is refused all the same
        log.exception("could not list a stuck session", extra={"request_id": call.request_id})
        return
    svc.metrics.sessions_stuck.set(stuck)
