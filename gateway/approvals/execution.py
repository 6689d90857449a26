"""Executing an approved action exactly once: whoever wins `approved -> executing` holds a
lease on it, sends its stored request, and stores the result.

Who executes: the process that claimed the action holds a lease on it, renewed while the
call runs. A sweep (recovery.py: at start-up, then every second, in any gateway on the
store) takes only a lease that ran out, so a live execution is left alone and a dead one's
call becomes outcome_unknown. Not a PID: after a crash, the PID may be another process's.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
from typing import Any

from yarl import URL

from gateway import answer_guard, answers
from gateway.approvals import states
from gateway.audit.events import now
from gateway.audit.log import AuditUnavailable
from gateway.audit.records import action_intent_record, action_outcome_record
from gateway.config import Tool
from gateway.errors import ErrorCode, GatewayError
from gateway.headers import HOP_BY_HOP
from gateway.services import Services
from gateway.store.actions import Action
from gateway.store.leases import renewed
from gateway.upstream import Outbound, send

log = logging.getLogger(__name__)

INSTANCE = secrets.token_hex(16)  # this process's holder id, new at every start
EXECUTOR = {"instance": INSTANCE, "host": socket.gethostname()}  # shown to approvers


class _NotSent(Exception):
    """Nothing left the gateway: the action goes back to `approved`."""


async def execute(svc: Services, action: Action) -> Action:
    """Send an approved action's request once; whoever wins `approved -> executing` does.

    A kill switch covering the call keeps it `approved` (with `blocked_by`) until lifted.
    """
    switch = svc.switchboard.covering(
        action.document["agent"], action.document["tool"], action.document["request"]["method"]
    )
    if switch is not None:
        blocked = {"target": switch.target, "reason": switch.reason}
        if action.document.get("blocked_by") == blocked:
            return action
        held = await svc.actions.replace(action, {**action.document, "blocked_by": blocked})
        if held is not None:
            states.record(
                svc, held.document, "approved", "gateway", f"held by switch {switch.target}"
            )
        return held or await svc.actions.get(action.id) or action
    document = {
        **action.document,
        "state": "executing",
        "executing_since": now(),
        "executor": EXECUTOR,
    }
    claimed = await svc.actions.claim(action, document, INSTANCE, _lease_end(svc))
    if claimed is None:
        return await svc.actions.get(action.id) or action
    states.record(svc, document, "approved", "gateway")

    async def renew() -> bool:  # the lease runs from each renewal
        return await svc.actions.renew(claimed, INSTANCE, _lease_end(svc))

    lease_s = svc.config.approvals.execution_lease_s
    try:
        async with renewed(renew, lease_s, "execution lease", _ids(claimed)):
            result = await _send(svc, claimed)
    except _NotSent as exc:
        return await _unclaim(svc, claimed, str(exc))
    except Exception as exc:  # a bug: the request may have gone out
        log.exception("action execution failed", extra={"action_id": action.id})
        result = {"error": ErrorCode.INTERNAL_ERROR.value, "message": f"{type(exc).__name__}"}
    status = result.get("status")
    final = {
        **document,
        "state": "succeeded" if status is not None and status < 400 else "failed",
        "result": result,
        "executed_at": now(),
    }
    finished = await _write_result(svc, claimed, final)
    svc.waiters.notify(action.id)
    return finished


async def _write_result(svc: Services, claimed: Action, final: dict[str, Any]) -> Action:
    """The call went out: its result must be stored, through a busy store too."""
    for delay in (0.1, 0.5, 1, 2, 5, 0):
        try:
            finished = await svc.actions.replace(claimed, final)
        except Exception:
            log.exception("cannot store an action's result yet", extra={"action_id": claimed.id})
            await asyncio.sleep(delay)
            continue
        if finished is None:  # swept meanwhile (its lease ran out): keep the record
            log.error("executed action changed meanwhile", extra={"action_id": claimed.id})
            return await svc.actions.get(claimed.id) or claimed
        states.record(svc, final, "executing", "gateway")
        return finished
    return claimed


async def _unclaim(svc: Services, claimed: Action, why: str) -> Action:
    back = {**claimed.document, "state": "approved", "not_sent": why}
    back.pop("executor", None)
    reverted = await svc.actions.replace(claimed, back)
    if reverted is None:
        return await svc.actions.get(claimed.id) or claimed
    states.record(svc, back, "executing", "gateway", why)
    return reverted  # run_approved tries it again once the audit log is back


def _lease_end(svc: Services) -> float:
    return time.time() + svc.config.approvals.execution_lease_s


def _ids(action: Action) -> dict[str, str]:
    return {"action_id": action.id, "request_id": str(action.document["request_id"])}


async def _send(svc: Services, action: Action) -> dict[str, Any]:
    document = action.document
    request = document["request"]
    tool = svc.tools.get(document["tool"])
    if tool is None:
        return {
            "error": ErrorCode.UNKNOWN_TOOL.value,
            "message": "the tool is no longer configured",
        }
    if svc.audit is not None:
        try:
            await svc.audit.write(action_intent_record(document, tool.upstream))
        except AuditUnavailable:
            raise _NotSent("the audit log cannot be written; retrying") from None
    outbound = Outbound(
        tool=tool,
        method=request["method"],
        url=URL(tool.upstream + request["target"], encoded=True),
        headers=[(name, value) for name, value in request["headers"]],
        body=action.body,
        request_id=document["request_id"],
        traceparent=document.get("traceparent"),  # None: parked by an older gateway
    )
    deadline = asyncio.timeout(tool.deadline_s)  # an answer kept alive forever ends too
    try:
        async with deadline:
            upstream, upstream_ms = await send(outbound, svc)
            try:
                result = await _read_result(upstream, tool, svc.config.approvals.max_result_bytes)
            finally:
                upstream.release()
        result["upstream_ms"] = upstream_ms
        if result.get("error") == ErrorCode.UPSTREAM_RESPONSE_TOO_LARGE.value:
            svc.metrics.responses_too_large.labels(tool.name, "approved_action").inc()
        for kind, count in result.get("redacted", {}).items():
            svc.metrics.response_redactions.labels(tool.name, kind).inc(count)
    except GatewayError as exc:
        result = {"error": exc.code.value, "message": exc.message}
    except TimeoutError:  # the deadline, or a pause past timeout_s while reading
        why = (
            f"did not finish within its deadline of {tool.deadline_s:g}s"
            if deadline.expired()
            else f"paused for more than {tool.timeout_s:g}s while answering"
        )
        result = {
            "error": ErrorCode.UPSTREAM_TIMEOUT.value,
            "message": f"tool '{tool.name}' {why}; the call may or may not have taken effect",
        }
    if svc.audit is not None:
        svc.audit.append(action_outcome_record(document, result))
    return result


async def _read_result(upstream: Any, tool: Tool, limit: int) -> dict[str, Any]:
    """The answer as the action keeps it: scrubbed as an agent would get it, up to
    `limit` bytes (approvals.max_result_bytes); past the tool's max_response_bytes, what
    came before, marked truncated and `upstream_response_too_large`."""
    skip = HOP_BY_HOP | {"content-length"}
    redactor = answer_guard.redactor_of(tool)
    counts: dict[str, int] = {}
    headers = [
        [n, v if redactor is None else redactor.text(v, counts)]
        for n, v in upstream.headers.items()
        if n.lower() not in skip
    ]
    chunks: list[bytes] = []
    size, truncated, error = 0, False, None
    try:
        answer_guard.check_declared(tool, upstream.content_length)
        body, changed = answer_guard.scrubbed(
            tool, redactor, upstream.headers, upstream.content.iter_any(), counts
        )
        if changed:  # a decoded body is kept unencoded
            headers = [[n, v] for n, v in headers if n.lower() != "content-encoding"]
        async for chunk in answer_guard.capped(body, tool):
            if size + len(chunk) > limit:
                chunks.append(chunk[: limit - size])
                truncated = True
                break
            chunks.append(chunk)
            size += len(chunk)
    except GatewayError as exc:  # too large, or an encoding that cannot be scrubbed
        truncated, error = True, exc
    result = answers.kept(upstream.status, headers, b"".join(chunks), truncated)
    if error is not None:
        result.update(error=error.code.value, message=error.message)
    if counts:
        result["redacted"] = counts
    return result
