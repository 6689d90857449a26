"""The life of an action: parked, decided by approvers, executed once, or expired.

States: pending -> approved -> executing -> succeeded | failed; pending -> denied | expired;
executing -> outcome_unknown (its holder's lease ran out: the gateway died mid-call; found
at start-up and every second by any gateway on the store; never re-sent).
Each transition is a conditional update in the store (see store/actions.py) and an
`action` record in the audit log.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import secrets
import socket
import time
from datetime import datetime
from typing import Any

from yarl import URL

from gateway import answers, fingerprint
from gateway.approvals import webhooks
from gateway.audit.events import event, iso, now
from gateway.audit.log import AuditUnavailable
from gateway.call import Call
from gateway.config import Principal
from gateway.errors import ErrorCode, GatewayError
from gateway.headers import CREDENTIAL_HEADERS, HOP_BY_HOP, dropping
from gateway.observability.ids import new_request_id
from gateway.services import Services
from gateway.store.actions import Action
from gateway.store.idempotency import waiter as idempotency_waiter
from gateway.store.leases import renewed
from gateway.upstream import Outbound, send

log = logging.getLogger(__name__)

TERMINAL = frozenset({"succeeded", "failed", "denied", "expired", "outcome_unknown"})
EXPIRY_INTERVAL_S = 1.0
_POLL_S = 1.0  # a held call re-reads the store this often (another replica may decide)
_RACE_RETRIES = 5


def _audit(svc: Services, action: dict[str, Any], before: str, by: str, comment: str = "") -> None:
    if svc.audit is not None:
        svc.audit.append(
            event(
                "action",
                action_id=action["id"],
                request_id=action["request_id"],
                agent=action["agent"],
                tool=action["tool"],
                from_state=before,
                to_state=action["state"],
                by=by,
                comment=comment,
            )
        )


def _stored_request(call: Call) -> dict[str, Any]:
    assert call.tool is not None and call.upstream_url is not None and call.input is not None
    drop = set(CREDENTIAL_HEADERS)
    if call.tool.credentials is not None:
        drop.add(call.tool.credentials.header.lower())
    if call.mcp is not None:
        drop.add("accept-encoding")  # the stored answer is read for its JSON-RPC result
    headers = [[name, value] for name, value in dropping(call.headers, drop)]
    target = call.request.raw_path[len("/tools/" + call.tool.name) :]
    request = {
        "method": call.request.method,
        "path": call.path,
        "target": target,  # the raw path below the tool and query, as sent
        "query": call.input["request"]["query"],
        "headers": headers,
        "size": len(call.body),
        "body_sha256": hashlib.sha256(call.body).hexdigest(),
        "body": call.input["request"]["body"],  # the parsed JSON, for approvers to read
    }
    if request["body"] is None and call.body:
        try:
            request["body_text"] = call.body.decode()
        except UnicodeDecodeError:
            request["body_base64"] = base64.b64encode(call.body).decode()
    return request


async def park(call: Call, svc: Services) -> Action:
    """Store the call as a pending action, or find the one its Idempotency-Key made; a
    key this call claimed (the idempotency stage) is then mapped to the action."""
    action = await _park(call, svc)
    await _map_key(call, svc, action)
    return action


async def _map_key(call: Call, svc: Services, action: Action) -> None:
    """Repeats of the call are answered with its action from now on, before limits, and
    the key cannot be reused for another request (parked or not) while it is kept."""
    key = call.idempotency_key
    if key is None or call.agent is None:
        return
    call.idempotency_key = None  # settled here: nothing is left for idempotency.settle
    agent = call.agent.id
    try:
        if not await svc.idempotency.answer(agent, key, call.request_id, {"action_id": action.id}):
            log.warning(
                "the idempotency claim was no longer this call's; its action stands",
                extra={"request_id": call.request_id, "action_id": action.id},
            )
    finally:
        svc.waiters.notify(idempotency_waiter(agent, key))


async def _park(call: Call, svc: Services) -> Action:
    assert call.agent is not None and call.tool is not None and call.decision is not None
    decision = call.decision
    request = _stored_request(call)
    digest = fingerprint.of_approval(call.tool.name, request)
    key = call.request.headers.get("Idempotency-Key")
    if call.mcp is not None and call.mcp.method == "tools/call":
        # A repeat of an MCP tool call is the same tool with the same arguments: its
        # JSON-RPC id (and so its body) differs each time.
        digest = fingerprint.of_repeat(call)
        key = key or digest
    if key is not None:
        existing = await svc.actions.by_key(call.agent.id, call.tool.name, key)
        if existing is not None and key == digest and _long_ended(existing, svc):
            # An MCP repeat finds an outcome only while it is fresh: the same call much
            # later is a new call (from another conversation, say), not a poll.
            await svc.actions.release_key(existing.id)
            existing = None
        if existing is not None:
            return _same_request(existing, digest)
    approval = decision.approval
    ttl = approval.ttl_s if approval and approval.ttl_s else svc.config.approvals.default_ttl_s
    created = time.time()
    document: dict[str, Any] = {
        "id": new_request_id(),
        "state": "pending",
        "agent": call.agent.id,
        "tool": call.tool.name,
        "request_id": call.request_id,
        "model": call.request.headers.get("X-Agent-Model"),
        "session": call.request.headers.get("X-Agent-Session"),
        "request": request,
        "digest": digest,
        "decision": {
            "reason": decision.reason,
            "policy_version": decision.policy_version,
            "tags": decision.tags,
            "roles": list(approval.roles) if approval else [],
            "min_approvals": approval.min_approvals if approval else 1,
            "ttl_s": ttl,
        },
        "approvals": [],
        "created_at": iso(created),
        "expires_at": iso(created + ttl),
        "result": None,
    }
    if not await svc.actions.insert(document, call.body, key):
        # Another call with the same key won the insert a moment ago.
        assert key is not None
        existing = await svc.actions.by_key(call.agent.id, call.tool.name, key)
        assert existing is not None
        return _same_request(existing, digest)
    _audit(svc, document, "", "gateway")
    webhooks.announce(svc, document)
    return Action(document, 1, call.body)


def ended_at(document: dict[str, Any]) -> str | None:
    """When the action ended (executed, denied or expired); None while it is open."""
    state = document["state"]
    if state in ("succeeded", "failed", "outcome_unknown"):
        return str(document.get("executed_at") or document["created_at"])
    if state == "expired":
        return str(document["expires_at"])
    if state == "denied":
        return max((str(a["at"]) for a in document["approvals"]), default=None)
    return None


def _long_ended(action: Action, svc: Services) -> bool:
    """Ended longer ago than an outcome waits for its agent (approvals.default_ttl_s)."""
    ended = ended_at(action.document)
    return ended is not None and ended < iso(time.time() - svc.config.approvals.default_ttl_s)


def _same_request(existing: Action, digest: str) -> Action:
    if existing.document["digest"] != digest:
        raise GatewayError(
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
            "this Idempotency-Key was already used for a different request; "
            "use a new key for a new call",
        )
    return existing


async def hold(svc: Services, action: Action, wait_s: float, tool_timeout_s: float) -> Action:
    """The action after holding its call up to `wait_s`. One approved in time is going
    out now, so its answer is worth the wait (at most the tool's timeout more) rather than
    an answer that invites a resend."""
    action = await wait_for_end(svc, action, wait_s)
    if action.state in ("approved", "executing"):
        action = await wait_for_end(svc, action, tool_timeout_s + 5)
    return action


async def wait_for_end(svc: Services, action: Action, timeout_s: float) -> Action:
    """The action once it has ended, or as it stands when `timeout_s` runs out."""
    deadline = time.monotonic() + timeout_s
    state = action.state
    while state not in TERMINAL:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        await svc.waiters.wait(action.id, min(left, _POLL_S))
        state = await svc.actions.state_of(action.id) or state
    if state == action.state:
        return action
    return await svc.actions.get(action.id) or action


def _allowed_to_decide(action: Action, approver: Principal) -> None:
    roles = action.document["decision"]["roles"]
    if roles and not set(roles) & set(approver.roles):
        raise GatewayError(
            ErrorCode.FORBIDDEN,
            f"this action needs an approver with one of the roles {', '.join(roles)}",
        )


async def decide(
    svc: Services, action_id: str, approver: Principal, approve: bool, comment: str
) -> Action:
    """Record one approver's verdict; the last approval needed executes the action."""
    for _ in range(_RACE_RETRIES):
        action = await svc.actions.get(action_id)
        if action is None:
            raise GatewayError(ErrorCode.NOT_FOUND, f"no action {action_id}")
        if action.state == "pending" and action.document["expires_at"] <= now():
            await _expire(svc, action)
            continue
        if action.state != "pending":
            raise GatewayError(ErrorCode.CONFLICT, f"the action is {action.state}, not pending")
        _allowed_to_decide(action, approver)
        document = dict(action.document)
        approvals = list(document["approvals"])
        if any(a["approver"] == approver.id for a in approvals):
            raise GatewayError(ErrorCode.CONFLICT, "you have already approved this action")
        approvals.append(
            {
                "approver": approver.id,
                "verdict": "approve" if approve else "deny",
                "comment": comment,
                "at": now(),
            }
        )
        document["approvals"] = approvals
        if not approve:
            document["state"] = "denied"
        elif (
            sum(a["verdict"] == "approve" for a in approvals)
            >= document["decision"]["min_approvals"]
        ):
            document["state"] = "approved"
        updated = await svc.actions.replace(action, document)
        if updated is None:
            continue  # another approver or worker moved it first: read it again
        _audit(svc, document, "pending", approver.id, comment)
        if updated.state == "approved":
            # Shielded: an approver who hangs up does not cancel the execution.
            return await asyncio.shield(svc.spawn(execute(svc, updated)))
        if updated.state == "denied":
            svc.waiters.notify(updated.id)
        return updated
    raise GatewayError(ErrorCode.CONFLICT, "the action kept changing; try again")


# Who executes: the process that claimed the action holds a lease on it, renewed while the
# call runs. A sweep (at start-up, then every second, in any gateway on the store) takes only
# a lease that ran out, so a live execution is left alone and a dead one's call becomes
# outcome_unknown. Not a PID: after a crash, the PID may be another process's.
INSTANCE = secrets.token_hex(16)  # this process's holder id, new at every start
EXECUTOR = {"instance": INSTANCE, "host": socket.gethostname()}  # shown to approvers
# An execution from a gateway that predates leases has none: it is taken as lapsed this long
# after it started beyond the longest tool timeout.
_UNLEASED_MARGIN_S = 60.0


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
            _audit(svc, held.document, "approved", "gateway", f"held by switch {switch.target}")
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
    _audit(svc, document, "approved", "gateway")

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
        _audit(svc, final, "executing", "gateway")
        return finished
    return claimed


async def _unclaim(svc: Services, claimed: Action, why: str) -> Action:
    back = {**claimed.document, "state": "approved", "not_sent": why}
    back.pop("executor", None)
    reverted = await svc.actions.replace(claimed, back)
    if reverted is None:
        return await svc.actions.get(claimed.id) or claimed
    _audit(svc, back, "executing", "gateway", why)
    return reverted  # run_approved tries it again once the audit log is back


def _lease_end(svc: Services) -> float:
    return time.time() + svc.config.approvals.execution_lease_s


def _ids(action: Action) -> dict[str, str]:
    return {"action_id": action.id, "request_id": str(action.document["request_id"])}


def _lapsed(action: Action, moment: float, unleased_s: float) -> bool:
    if action.lease_until is not None:
        return action.lease_until < moment
    started = action.document.get("executing_since") or action.document["created_at"]
    return moment - datetime.fromisoformat(started).timestamp() > unleased_s


async def _send(svc: Services, action: Action) -> dict[str, Any]:
    document = action.document
    request = document["request"]
    tool = svc.tools.get(document["tool"])
    if tool is None:
        return {
            "error": ErrorCode.UNKNOWN_TOOL.value,
            "message": "the tool is no longer configured",
        }
    call_fields = {
        "request_id": document["request_id"],
        "action_id": document["id"],
        "agent": document["agent"],
        "model": document["model"],
        "session": document["session"],
        "tool": tool.name,
        "method": request["method"],
        "path": request["path"],
    }
    if svc.audit is not None:
        try:
            await svc.audit.write(event("intent", **call_fields, upstream=tool.upstream))
        except AuditUnavailable:
            raise _NotSent("the audit log cannot be written; retrying") from None
    outbound = Outbound(
        tool=tool,
        method=request["method"],
        url=URL(tool.upstream + request["target"], encoded=True),
        headers=[(name, value) for name, value in request["headers"]],
        body=action.body,
        request_id=document["request_id"],
        traceparent=None,
    )
    deadline = asyncio.timeout(tool.deadline_s)  # an answer kept alive forever ends too
    try:
        async with deadline:
            upstream, upstream_ms = await send(outbound, svc)
            try:
                result = await _read_result(upstream, svc.config.approvals.max_result_bytes)
            finally:
                upstream.release()
        result["upstream_ms"] = upstream_ms
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
        svc.audit.append(
            event(
                "outcome",
                **call_fields,
                status=result.get("status"),
                upstream_status=result.get("status"),
                error=result.get("error"),
                bytes=result.get("size", 0),
            )
        )
    return result


async def _read_result(upstream: Any, limit: int) -> dict[str, Any]:
    chunks, size, truncated = [], 0, False
    async for chunk in upstream.content.iter_any():
        if size + len(chunk) > limit:
            chunks.append(chunk[: limit - size])
            truncated = True
            break
        chunks.append(chunk)
        size += len(chunk)
    skip = HOP_BY_HOP | {"content-length"}
    headers = [[n, v] for n, v in upstream.headers.items() if n.lower() not in skip]
    return answers.kept(upstream.status, headers, b"".join(chunks), truncated)


async def _expire(svc: Services, action: Action) -> None:
    expired = await svc.actions.replace(action, {**action.document, "state": "expired"})
    if expired is not None:
        _audit(svc, expired.document, "pending", "gateway")
        svc.waiters.notify(action.id)


async def expire_due(svc: Services) -> None:
    for action in await svc.actions.due(now()):
        await _expire(svc, action)


async def expire_forever(svc: Services) -> None:
    """Expiry runs whether or not anyone looks at the queue."""
    while True:
        try:
            await expire_due(svc)
            await sweep_dead_executions(svc)
            await run_approved(svc)
        except Exception:
            log.exception("action expiry failed; retrying")
        await asyncio.sleep(EXPIRY_INTERVAL_S)


async def sweep_dead_executions(svc: Services) -> None:
    """Calls whose holder stopped renewing its lease (its gateway died mid-call) become
    outcome_unknown: never re-sent. The store takes only a lease still lapsed when written."""
    moment = time.time()
    unleased_s = _UNLEASED_MARGIN_S + max((t.timeout_s for t in svc.config.tools), default=10)
    for action in await svc.actions.lapsed(moment):
        if not _lapsed(action, moment, unleased_s):
            continue
        unknown = {**action.document, "state": "outcome_unknown"}
        if await svc.actions.end_lapsed(action, unknown, moment) is not None:
            _audit(svc, unknown, "executing", "gateway", "the gateway stopped during the call")
            svc.waiters.notify(action.id)


async def run_approved(svc: Services) -> None:
    """Approved actions no execution holds (a switch was lifted, an earlier try found the
    audit log down): the claim in `execute` keeps each to one execution."""
    if svc.audit is not None and not svc.audit.available:
        return
    for action in await svc.actions.in_state("approved"):
        if (
            svc.switchboard.covering(
                action.document["agent"],
                action.document["tool"],
                action.document["request"]["method"],
            )
            is None
        ):
            svc.spawn(execute(svc, action))


async def recover(svc: Services) -> None:
    """At start-up: sweep dead executions, run approved actions that never started, and
    start the loop that expires actions and sweeps again."""
    await sweep_dead_executions(svc)
    await run_approved(svc)
    svc.spawn(expire_forever(svc), loop=True)


def summary(action: Action) -> dict[str, Any]:
    """The action as the APIs show it, with the seconds left while it is pending."""
    view = dict(action.document)
    if action.state == "pending":
        left = _seconds_until(view["expires_at"])
        view["time_left_s"] = max(0.0, round(left, 1))
    return view


def _seconds_until(moment: str) -> float:
    return datetime.fromisoformat(moment).timestamp() - time.time()
