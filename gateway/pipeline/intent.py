"""intent: make the call's decision and intent durable before anything is sent.

Writes the audit log's `decision` (allow) and `intent` records in one commit and waits for
it, at most `audit.write_timeout_s`. Refuses with 503 `audit_unavailable` when the store
cannot be written, or not in time: nothing is forwarded unrecorded, and a call refused
here is never forwarded later. A call whose agent hung up while its intent was being
committed is not forwarded either: it ends with an outcome record `agent_disconnected`.
Passes every call when the audit log is off (`audit.enabled: false`).
"""

from __future__ import annotations

from gateway.audit.log import AuditUnavailable
from gateway.audit.records import decision_record, intent_record
from gateway.call import Call
from gateway.errors import AgentGone, ErrorCode, GatewayError
from gateway.services import Services


async def run(call: Call, svc: Services) -> None:
    if svc.audit is None:
        return
    try:
        await svc.audit.write(
            decision_record(call, svc.config.audit.record_bodies), intent_record(call)
        )
    except AuditUnavailable:
        raise GatewayError(
            ErrorCode.AUDIT_UNAVAILABLE,
            "the gateway cannot write its audit log, so nothing was sent; retry later",
        ) from None
    call.intent_recorded = True
    transport = call.request.transport
    if transport is None or transport.is_closing():
        # Sending now would act for an agent that gave up (and may be retrying).
        raise AgentGone
