"""intent: make the call's decision and intent durable before anything is sent.

Writes the audit log's `decision` (allow) and `intent` records in one commit and waits for
it. Refuses with 503 `audit_unavailable` when the store cannot be written: nothing is
forwarded unrecorded. Passes every call when the audit log is off (`audit.enabled: false`).
"""

from __future__ import annotations

from gateway.audit.log import AuditUnavailable
from gateway.audit.records import decision_record, intent_record
from gateway.errors import ErrorCode, GatewayError
from gateway.pipeline.call import Call
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
