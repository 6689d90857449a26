"""decide: the policy input -> a Decision, failing closed.

Refuses with 403 `policy_denied` (the policy's reason as the message) unless `allow` is
exactly true, and with 503 `policy_unavailable` when the engine raises anything, Rust
panics included. Nothing is forwarded in either case. A decision that requires approval
goes on to the approval stage, which parks the call.
"""

from __future__ import annotations

import logging
import time

from opentelemetry.trace import Span

from gateway.audit.records import shadow_record
from gateway.call import Call
from gateway.errors import ErrorCode, GatewayError
from gateway.observability import tracing
from gateway.pipeline import hooks
from gateway.policy.decision import Decision
from gateway.policy.errors import PolicyError
from gateway.policy.shadow import disagreement
from gateway.services import Services

log = logging.getLogger(__name__)


async def run(call: Call, svc: Services) -> None:
    assert call.input is not None
    call.decision = hooks.of(call).undecided(call, svc.policies.policy_version)
    if call.decision is not None:  # not a call the policy decides (an MCP notification)
        return
    with tracing.stage(svc.tracing, "callgate.decide") as span:
        await _decide(call, svc, span)


async def _decide(call: Call, svc: Services, span: Span | None) -> None:
    assert call.input is not None
    started = time.perf_counter()
    try:
        decision = await svc.policies.decide(call.input)
    except PolicyError as exc:
        log.error("policy engine failed", extra={"request_id": call.request_id, "error": str(exc)})
        await _shadow(call, svc, None, str(exc))
        raise GatewayError(
            ErrorCode.POLICY_UNAVAILABLE,
            "the policy engine could not decide this call, so nothing was sent; "
            "retry later or contact the gateway operators",
        ) from None
    finally:
        elapsed = time.perf_counter() - started
        svc.metrics.policy_latency.observe(elapsed)
        call.policy_ms = round(elapsed * 1000, 3)
    call.decision = decision
    if span is not None:
        tracing.decided(span, decision.allow, decision.approval_required)
        span.set_attribute("callgate.policy_version", decision.policy_version)
    await _shadow(call, svc, decision, decision.reason)
    if not decision.allow:
        raise GatewayError(ErrorCode.POLICY_DENIED, decision.reason or "denied by policy")


async def _shadow(call: Call, svc: Services, enforced: Decision | None, reason: str) -> None:
    """Count and audit where the shadow set would decide otherwise (None: the enforced
    engine failed)."""
    if svc.shadow is None:
        return
    assert call.input is not None and call.tool is not None
    version = enforced.policy_version if enforced is not None else svc.policies.policy_version
    found = await disagreement(svc.shadow, call.input, enforced, reason, version)
    if found is not None:
        svc.metrics.shadow_disagreements.labels(call.tool.name, found["direction"]).inc()
        if svc.audit is not None:
            svc.audit.append(shadow_record(call, found))
