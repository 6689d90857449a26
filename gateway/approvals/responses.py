"""What an agent gets for a call that needs approval: 202 while nobody has decided, or
(after `Prefer: wait`) the tool's own answer, as if the call had simply been slow."""

from __future__ import annotations

import json

from aiohttp import web

from gateway.answers import body_of
from gateway.approvals import parking, states
from gateway.call import Call
from gateway.errors import ErrorCode, GatewayError
from gateway.services import Services
from gateway.store.actions import Action


def pending(action: Action, request_id: str) -> web.Response:
    poll = f"/actions/{action.id}"
    if action.state == "pending":
        status = "pending_approval"
        message = (
            "This call needs a human's approval and has NOT been executed: nothing has "
            f"happened yet. Check its state with GET {poll} (same token). Once approved it "
            "is executed exactly once and its result is shown there. Do not send the call "
            "again as a new call; repeat it only with the same Idempotency-Key."
        )
    else:  # approved or executing: it is going out, or has
        status = action.state
        message = (
            "This call was approved and is being executed by the gateway now. Do not send it "
            f"again: its result will be shown at GET {poll} (same token)."
        )
    body = {
        "status": status,
        "action_id": action.id,
        "poll": poll,
        "expires_at": action.document["expires_at"],
        "message": message,
    }
    return web.Response(
        status=202,
        body=json.dumps(body, ensure_ascii=False).encode(),
        content_type="application/json",
        headers={"Location": poll, "X-Request-Id": request_id},
    )


def ended(action: Action, request_id: str) -> web.StreamResponse:
    """The answer to a held call: the tool's response, a refusal, or still the 202."""
    state, result = action.state, action.document.get("result") or {}
    if state in ("succeeded", "failed") and result.get("truncated"):
        raise GatewayError(
            ErrorCode.CONFLICT,
            f"the approved call was executed and the tool answered {result['status']}, but "
            "its answer was larger than this gateway keeps; do not send it again, ask an "
            f"operator for the whole answer (action {action.id})",
        )
    if state in ("succeeded", "failed") and "status" in result:
        response = web.Response(status=result["status"], body=body_of(result))
        for name, value in result["headers"]:
            response.headers.add(name, value)
        response.headers["X-Request-Id"] = request_id
        return response
    if state == "failed":
        code = ErrorCode(result.get("error", ErrorCode.INTERNAL_ERROR.value))
        raise GatewayError(code, f"the approved call failed: {result.get('message', '')}")
    if state == "denied":
        comments = "; ".join(a["comment"] for a in action.document["approvals"] if a["comment"])
        raise GatewayError(
            ErrorCode.POLICY_DENIED,
            "an approver denied this call, so it was not executed"
            + (f": {comments}" if comments else ""),
        )
    if state == "expired":
        raise GatewayError(
            ErrorCode.POLICY_DENIED,
            "nobody approved this call in time, so it was not executed; it has expired",
        )
    if state == "outcome_unknown":
        raise GatewayError(
            ErrorCode.CONFLICT,
            "the gateway stopped while executing this approved call: it may or may not "
            "have taken effect; ask an operator before trying again",
        )
    return pending(action, request_id)


async def held(call: Call, svc: Services, wait_s: float) -> web.StreamResponse:
    """Park the call and answer it: `ended` once held up to `wait_s` (0: the 202 now)."""
    assert call.tool is not None
    action = await parking.park(call, svc, wait_s)
    call.action_id = action.id
    if wait_s > 0:
        action = await states.hold(svc, action, wait_s, call.tool.timeout_s)
    return ended(action, call.request_id)
