"""Parking a call as a pending action: the request stored whole (credentials stripped),
the call's Idempotency-Key mapped to the action, and a repeat matched to the action it
made (by its key, or for an MCP tool call by the same tool and arguments)."""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from typing import Any

from gateway import fingerprint
from gateway.approvals import states, webhooks
from gateway.audit.events import iso
from gateway.call import Call
from gateway.headers import CREDENTIAL_HEADERS, dropping
from gateway.observability.ids import new_request_id
from gateway.services import Services
from gateway.store.actions import Action
from gateway.store.idempotency import waiter as idempotency_waiter

log = logging.getLogger(__name__)


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


async def park(call: Call, svc: Services, held_s: float = 0) -> Action:
    """Store the call as a pending action, or find the one its Idempotency-Key made; a
    key this call claimed (the idempotency stage) is then mapped to the action. `held_s`:
    how long the agent's connection is held for the answer (approvers are told)."""
    action = await _park(call, svc, held_s)
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


async def _park(call: Call, svc: Services, held_s: float) -> Action:
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
            fingerprint.require_same(existing.document["digest"], digest)
            return existing
    approval = decision.approval
    ttl = approval.ttl_s if approval and approval.ttl_s else svc.config.approvals.default_ttl_s
    created = time.time()
    document: dict[str, Any] = {
        "id": new_request_id(),
        "state": "pending",
        "agent": call.agent.id,
        "tool": call.tool.name,
        "request_id": call.request_id,
        # Its execution continues this trace (gateway/approvals/execution.py).
        "traceparent": call.traceparent,
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
            "summary": approval.summary if approval else None,
            "fields": list(approval.fields) if approval else [],
        },
        "approvals": [],
        "created_at": iso(created),
        "expires_at": iso(created + ttl),
        # Until then the agent's call is held open for the outcome (Prefer: wait).
        "held_until": iso(created + min(held_s, ttl)) if held_s > 0 else None,
        "result": None,
    }
    if not await svc.actions.insert(document, call.body, key):
        # Another call with the same key won the insert a moment ago.
        assert key is not None
        existing = await svc.actions.by_key(call.agent.id, call.tool.name, key)
        assert existing is not None
        fingerprint.require_same(existing.document["digest"], digest)
        return existing
    states.record(svc, document, "", "gateway")
    webhooks.announce(svc, document)
    return Action(document, 1, call.body)


def _long_ended(action: Action, svc: Services) -> bool:
    """Ended longer ago than an outcome waits for its agent (approvals.default_ttl_s)."""
    ended = states.ended_at(action.document)
    return ended is not None and ended < iso(time.time() - svc.config.approvals.default_ttl_s)
