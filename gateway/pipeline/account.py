"""account: every call ends here, however it ends.

Wraps the whole pipeline. A refusal (GatewayError) becomes its error response, in the
form the tool's protocol reads (gateway/pipeline/hooks.py); an answer that broke off after
it started cuts the agent's connection; anything unexpected is a 500 `internal_error`.
Then each call gets its metrics, its one access-log line and its closing audit record: the
outcome of a forwarded call, or the decision of a refused one (past the refusal limit of
its agent, or client address before the agent is known, a refusal is only counted:
gateway/audit/shedding.py).

It also gives the call its trace: with tracing on, a SERVER span around the whole pipeline
(gateway/observability/tracing.py); without, the agent's `traceparent` or a new one, so the
trace id in the audit log and the access log is the one the tool gets either way.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from opentelemetry.trace import Span

from gateway.audit import shedding
from gateway.audit.records import decision_record, outcome_record
from gateway.audit.shedding import SHEDDABLE
from gateway.call import Call
from gateway.errors import AgentGone, ErrorCode, GatewayError, StreamBroken, render
from gateway.observability import tracing
from gateway.observability.ids import call_traceparent
from gateway.observability.metrics import UNKNOWN
from gateway.pipeline import hooks
from gateway.pipeline.stage import Rest
from gateway.services import Services

log = logging.getLogger(__name__)

# Outcomes of calls that were answered as they should be; any other is a refusal's code or
# a failure.
_ANSWERED = frozenset({"forwarded", "replayed", "pending_approval", "approved"})


async def around(call: Call, svc: Services, rest: Rest) -> web.StreamResponse:
    if svc.tracing is None:  # all that tracing costs when it is off
        call.traceparent = call_traceparent(call.request.headers.get("traceparent"))
        return await _answer(call, svc, rest, None)
    with svc.tracing.server_span(call.request) as span:
        call.traceparent = tracing.traceparent_of(span)
        return await _answer(call, svc, rest, span)


async def _answer(call: Call, svc: Services, rest: Rest, span: Span | None) -> web.StreamResponse:
    reason = None  # why the call was refused (not the exception: it holds a frame cycle)
    try:
        response = await rest()
        outcome = _answered(call, response)
    except GatewayError as error:
        reason = error.message
        response = await hooks.of(call).refusal(call, error, svc)
        outcome = error.code.value
    except StreamBroken as broken:
        # Abort, so the agent sees a failed transfer, never a short body that looks whole.
        if call.request.transport is not None:
            call.request.transport.abort()
        response = broken.response
        outcome = broken.outcome
    except AgentGone:  # nothing was sent, and nobody reads the answer
        response = web.Response(status=499)
        outcome = "agent_disconnected"
    except asyncio.CancelledError:
        # Only with handler_cancellation on: the agent hung up; the call is still counted.
        _account(call, svc, "agent_disconnected", 499, None, span)
        raise
    except Exception:
        log.exception("unexpected failure", extra={"request_id": call.request_id})
        allowed = call.decision is not None and call.decision.allow  # forward may have begun
        reason = (
            "the gateway failed while handling this call; nothing was sent"
            if not allowed
            else "the gateway failed while forwarding this call; "
            "it may or may not have taken effect"
        )
        response = render(GatewayError(ErrorCode.INTERNAL_ERROR, reason), call.request_id)
        outcome = ErrorCode.INTERNAL_ERROR.value
    _account(call, svc, outcome, response.status, reason, span)
    return response


def _answered(call: Call, response: web.StreamResponse) -> str:
    if call.answer_cut is not None:
        return call.answer_cut  # ended with a refusal in place of the rest of the answer
    if call.replayed:
        return "replayed"  # an Idempotency-Key's stored answer; the tool was not called
    if call.action_id is None:
        return "forwarded"
    # Parked: still pending (202), or held until it was executed.
    pending = response.status == 202 or call.pending_answer
    return "pending_approval" if pending else "approved"


def _account(
    call: Call,
    svc: Services,
    outcome: str,
    status: int,
    reason: str | None,
    span: Span | None,
) -> None:
    """Metrics, the one access-log line and the closing audit record of every call, and
    the end of its span."""
    if svc.audit is not None:
        if call.intent_recorded:
            error = None if outcome == "forwarded" else outcome
            svc.audit.append(outcome_record(call, status, error))
        elif outcome not in SHEDDABLE or _record_refusal(call, svc, outcome):
            svc.audit.append(
                decision_record(
                    call,
                    svc.config.audit.record_bodies,
                    code=outcome,
                    reason=reason,
                    status=status,
                )
            )
    elapsed = time.perf_counter() - call.received
    tool = call.tool.name if call.tool else UNKNOWN
    agent = call.agent.id if call.agent else UNKNOWN
    svc.metrics.requests_of(tool, agent, outcome).inc()
    if outcome == ErrorCode.UPSTREAM_RESPONSE_TOO_LARGE:
        svc.metrics.responses_too_large.labels(tool, "call").inc()
    for kind, count in call.redacted.items():
        svc.metrics.response_redactions.labels(tool, kind).inc(count)
    hooks.of(call).count(call, svc, tool, outcome)
    svc.metrics.gateway_latency_of(tool).observe(elapsed)
    decision = call.decision
    svc.access_log.write(
        {
            "request_id": call.request_id,
            "agent": agent,
            "tool": tool,
            "method": call.request.method,
            "path": call.path,
            "decision": None if decision is None else ("allow" if decision.allow else "deny"),
            "policy_version": decision.policy_version if decision else None,
            "outcome": outcome,
            "status": status,
            "latency_ms": round(elapsed * 1000, 3),
            "trace_id": call.trace_id,
        },
    )
    if span is not None:
        tracing.end_call(span, call, status, None if outcome in _ANSWERED else outcome)


def _record_refusal(call: Call, svc: Services, outcome: str) -> bool:
    """Whether this refusal gets an audit record of its own; past the limit it is only
    counted."""
    if call.agent is not None:
        by, who = shedding.AGENT, call.agent.id
    else:
        by, who = shedding.CLIENT, call.request.remote or UNKNOWN
    recorded, due = svc.refusals.count(by, who, outcome)
    svc.record_refusals_shed(due)
    if not recorded:
        svc.metrics.refusals_shed.labels(by).inc()
    return recorded
