"""idempotency: answer repeats of a call that carries an `Idempotency-Key`.

The first call with a key claims it (with a fingerprint of method, tool, target and body)
and goes on; its final response is stored for `idempotency.ttl_s`. A repeat with the same
fingerprint gets that response again, with `Idempotent-Replayed: true`, and the tool is
not called; while the first is still in flight, a repeat waits up to `idempotency.wait_s`
for it, then gets 409 `idempotency_in_flight`. The same key with another request is 422
`idempotency_key_reused`; a tool with `idempotency: required` refuses writes without a
key with 428. Calls that need approval leave the key to the approval stage, which maps it
to their action. Runs before limits: a replay never counts against them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import time
from typing import Any

from aiohttp import web

from gateway.errors import ErrorCode, GatewayError
from gateway.pipeline.call import Call
from gateway.services import Services
from gateway.switchboard import SAFE_METHODS

_POLL_S = 0.1
_LEASE_MARGIN_S = 30.0


def _valid(key: str) -> bool:
    return 0 < len(key) <= 255 and all(" " <= c <= "~" for c in key)


def fingerprint(call: Call) -> str:
    assert call.tool is not None
    parts = (call.request.method, call.tool.name, call.request.raw_path)
    digest = hashlib.sha256("\0".join(parts).encode())
    digest.update(b"\0" + hashlib.sha256(call.body).digest())
    return digest.hexdigest()


def _replay(response: dict[str, Any], call: Call) -> web.Response:
    if response.get("too_large"):
        raise GatewayError(
            ErrorCode.CONFLICT,
            f"this Idempotency-Key's call was already done (the tool answered "
            f"{response['status']}), but its answer was too large to keep for replays; "
            "do not send it again",
        )
    replayed = web.Response(status=response["status"], body=base64.b64decode(response["body"]))
    for name, value in response["headers"]:
        replayed.headers.add(name, value)
    replayed.headers["Idempotent-Replayed"] = "true"
    replayed.headers["X-Request-Id"] = call.request_id
    call.replayed = True
    return replayed


async def run(call: Call, svc: Services) -> web.StreamResponse | None:
    assert call.agent is not None and call.tool is not None and call.decision is not None
    key = call.request.headers.get("Idempotency-Key")
    if key is None:
        if call.tool.idempotency == "required" and call.request.method not in SAFE_METHODS:
            raise GatewayError(
                ErrorCode.IDEMPOTENCY_KEY_REQUIRED,
                f"tool '{call.tool.name}' requires an Idempotency-Key header on "
                f"{call.request.method} calls: send a new unique value (a UUID) for each new "
                "call, and the same value when you retry that call",
            )
        return None
    if not _valid(key):
        raise GatewayError(
            ErrorCode.BAD_REQUEST, "Idempotency-Key must be 1 to 255 printable ASCII characters"
        )
    if call.decision.approval_required:
        return None  # the approval stage maps the key to the pending action
    config = svc.config.idempotency
    mine = fingerprint(call)
    found = await svc.idempotency.claim(
        call.agent.id,
        key,
        mine,
        call.request_id,
        lease_s=call.tool.timeout_s + _LEASE_MARGIN_S,
        ttl_s=config.ttl_s,
    )
    if found is None:
        call.idempotency_key = key
        return None
    if found.fingerprint != mine:
        raise GatewayError(
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
            "this Idempotency-Key was already used for a different request; "
            "use a new key for a new call",
        )
    deadline = time.monotonic() + config.wait_s
    while found is not None and found.response is None and time.monotonic() < deadline:
        await svc.waiters.wait(_waiter(call.agent.id, key), _POLL_S)
        found = await svc.idempotency.get(call.agent.id, key)
    if found is None:  # the first call sent nothing and let go of the key: go on as first
        return await run(call, svc)
    if found.response is None:
        raise GatewayError(
            ErrorCode.IDEMPOTENCY_IN_FLIGHT,
            f"the first call with this Idempotency-Key is still running after "
            f"{config.wait_s:g}s; retry later with the same key to get its answer",
            headers={"Retry-After": "1"},
        )
    return _replay(found.response, call)


def _waiter(agent: str, key: str) -> str:
    return f"idempotency:{agent}:{key}"


async def settle(call: Call, svc: Services) -> None:
    """After the response: keep it for replays, or let go of the key if nothing was sent
    (or the answer never came whole), so that a retry runs for real."""
    key = call.idempotency_key
    if key is None or call.agent is None:
        return
    agent = call.agent.id
    try:
        if call.captured is not None:
            await svc.idempotency.answer(agent, key, call.request_id, call.captured)
        else:
            await svc.idempotency.release(agent, key, call.request_id)
    finally:
        svc.waiters.notify(_waiter(agent, key))


async def purge_forever(svc: Services) -> None:
    while True:
        await asyncio.sleep(60)
        # Retried in a minute; expired keys are ignored when read anyway.
        with contextlib.suppress(Exception):
            await svc.idempotency.purge()
