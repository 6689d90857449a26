"""idempotency: answer repeats of a call that carries an `Idempotency-Key`.

The first call with a key claims it for its agent (with a fingerprint of method, tool,
target and body) and goes on; its final response is stored for `idempotency.ttl_s`. A
repeat with the same fingerprint gets that response again, with `Idempotent-Replayed:
true`, and the tool is not called; while the first is still in flight, a repeat waits up
to `idempotency.wait_s` for it, then gets 409 `idempotency_in_flight`. The same key with
another request is 422 `idempotency_key_reused`, whether either call was parked for
approval or not; a tool with `idempotency: required` refuses writes without a key with
428. A call parked for approval maps its key to its action (parking.park); a repeat of
it goes on with that action, which the approval stage answers (`Prefer: wait` included).
Runs before limits: replays and repeats never count against them.

A call that may have reached the tool without its answer coming back whole (504
`upstream_timeout`, a connection broken after sending, an answer cut mid-stream, the
gateway failing or being stopped while forwarding) leaves an unknown outcome on its key:
the tool is never sent the call again with that key, and every repeat, waiting ones
included, gets 409 `idempotency_outcome_unknown` naming the first call's request id for
the key's TTL. Only a call that sent nothing (refused before forwarding, or the connection
to the tool refused) lets go of its key, so that a retry runs for real. A tool declared
to honour the key itself (`tools[].idempotency_upstream`, which forwards it) gets the retry
instead: the key is let go after an unknown outcome too.

The claim is a lease (the tool's timeout plus LEASE_MARGIN_S) that the first call renews
while it runs (`sending`, around forwarding and streaming the answer). Just before the
request leaves, the claim is marked sent, which fails, so that nothing is sent, when it was
taken over. A claim whose lease ran out (its gateway died) is taken over only if it was
never sent; a sent one is an unknown outcome. A store that cannot be written before
sending fails the call with 503 `store_unavailable`, nothing sent; one that cannot be
written after it leaves the claim to run out its lease. See docs/limits.md, Idempotency-Key.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from gateway import answers, fingerprint
from gateway.call import Call
from gateway.config import Tool
from gateway.errors import ErrorCode, GatewayError
from gateway.headers import HOP_BY_HOP, SAFE_METHODS
from gateway.pipeline.stage import Rest
from gateway.services import Services
from gateway.store.idempotency import Entry, waiter
from gateway.store.leases import renewed

log = logging.getLogger(__name__)

_POLL_S = 0.1
# Beyond the tool's timeout, how long a claim outlives its last renewal.
LEASE_MARGIN_S = 30.0


# What an agent is told about a first call whose outcome is unknown, by why it is unknown.
_UNKNOWN_BECAUSE = {
    "timeout": "got no answer from the tool within its timeout",
    "no_answer": "lost its connection to the tool after the call may have been sent",
    "broken_answer": "had the tool's answer break off before it was whole",
    "cut_short": "was cut short in the gateway while being forwarded",
    "gateway_stopped": "was being forwarded by a gateway that stopped",
}


def lease_s(tool: Tool) -> float:
    return tool.timeout_s + LEASE_MARGIN_S


def _valid(key: str) -> bool:
    return 0 < len(key) <= 255 and all(" " <= c <= "~" for c in key)


def _replay(response: dict[str, Any], call: Call) -> web.Response:
    if answers.truncated(response):
        raise GatewayError(
            ErrorCode.CONFLICT,
            f"this Idempotency-Key's call was already done (the tool answered "
            f"{response['status']}), but its answer was too large to keep for replays; "
            "do not send it again",
        )
    replayed = web.Response(status=response["status"], body=answers.body_of(response))
    skip = HOP_BY_HOP | set(answers.NOT_REPLAYED)  # also for answers kept by older versions
    for name, value in response["headers"]:
        if name.lower() not in skip:
            replayed.headers.add(name, value)
    replayed.headers["Idempotent-Replayed"] = "true"
    replayed.headers["X-Request-Id"] = call.request_id
    call.replayed = True
    return replayed


def _outcome_unknown(found: Entry, why: str) -> GatewayError:
    because = _UNKNOWN_BECAUSE.get(why, "did not get the tool's whole answer")
    return GatewayError(
        ErrorCode.IDEMPOTENCY_OUTCOME_UNKNOWN,
        f"the first call with this Idempotency-Key (request id {found.owner}) {because}, so "
        "it may or may not have taken effect; the gateway will not send it again with this "
        "key, and every retry with it gets this answer. Check whether it took effect (for "
        "example, read the resource it changes); do not retry with a new key unless you know "
        "it did not take effect",
    )


def _store_failed() -> GatewayError:
    return GatewayError(
        ErrorCode.STORE_UNAVAILABLE,
        "the gateway cannot keep this Idempotency-Key in its store, so nothing was sent; "
        "retry later with the same key",
        headers={"Retry-After": "1"},
    )


async def around(call: Call, svc: Services, rest: Rest) -> web.StreamResponse:
    """Claim the call's key, or answer it as a repeat; settle the key once the rest of
    the pipeline has answered."""
    replayed = await _claim(call, svc)
    if replayed is not None:
        return replayed
    try:
        response = await rest()
    except asyncio.CancelledError:
        _settle_apart(call, svc)
        raise
    except BaseException:
        await settle(call, svc)
        raise
    try:
        await settle(call, svc)
    except asyncio.CancelledError:  # the agent hung up after its answer went out
        _settle_apart(call, svc)
        raise
    return response


def _settle_apart(call: Call, svc: Services) -> None:
    """Settle a cancelled call's key in a task of its own (awaited here, it could be cut
    short too), which closing the gateway waits for. Settling again is harmless: it
    writes the same answer, or releases a claim that is already gone."""
    svc.spawn(settle(call, svc))


async def _claim(call: Call, svc: Services) -> web.StreamResponse | None:
    """None to go on: without a key, as the key's first call, or as the repeat of a call
    parked for approval (`call.action_id`, answered by the approval stage)."""
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
    if len(call.request.headers.getall("Idempotency-Key")) > 1:  # the tool may read another
        raise GatewayError(ErrorCode.BAD_REQUEST, "send one Idempotency-Key header, not several")
    config = svc.config.idempotency
    mine = fingerprint.of_request(call)
    try:
        found = await svc.idempotency.claim(
            call.agent.id,
            key,
            mine,
            call.request_id,
            lease_s=lease_s(call.tool),
            ttl_s=config.ttl_s,
            resend=call.tool.idempotency_upstream,
        )
    except Exception:
        log.exception("cannot claim an idempotency key", extra={"request_id": call.request_id})
        raise _store_failed() from None
    if found is None:
        # This call owns the key: its answer is kept (settle), or, when it is parked,
        # the key is mapped to its action (parking.park).
        call.idempotency_key = key
        return None
    fingerprint.require_same(found.fingerprint, mine)
    deadline = read_at = time.monotonic()
    deadline += config.wait_s
    while (
        found is not None
        and found.response is None
        and not found.lapsed
        and time.monotonic() < deadline
    ):
        poll_s = min(svc.waiters.poll_s(_POLL_S), max(0.0, deadline - time.monotonic()))
        await svc.waiters.wait(waiter(call.agent.id, key), poll_s, read_at)
        read_at = time.monotonic()
        found = await svc.idempotency.get(call.agent.id, key)
        if found is not None:  # the first call may have let go, and another request taken it
            fingerprint.require_same(found.fingerprint, mine)
    if found is None:  # the first call sent nothing and let go of the key: go on as first
        return await _claim(call, svc)
    if found.lapsed and (not found.sent or call.tool.idempotency_upstream):
        return await _claim(call, svc)  # its gateway died before sending: take the key over
    why = found.outcome_unknown
    if why is not None:
        raise _outcome_unknown(found, why)
    if found.response is None:
        raise GatewayError(
            ErrorCode.IDEMPOTENCY_IN_FLIGHT,
            f"the first call with this Idempotency-Key is still running after "
            f"{config.wait_s:g}s; retry later with the same key to get its answer",
            headers={"Retry-After": "1"},
        )
    if found.action_id is not None:
        call.action_id = found.action_id
        return None
    return _replay(found.response, call)


async def sending(call: Call, svc: Services, rest: Rest) -> web.StreamResponse:
    """Around forwarding: the key's claim is this call's while the tool answers."""
    async with _lease_kept(call, svc):
        return await rest()


@contextlib.asynccontextmanager
async def _lease_kept(call: Call, svc: Services) -> AsyncIterator[None]:
    """Around sending the call with a key (if it has one): mark its claim sent first (or
    refuse, sending nothing, when the claim is no longer its own); keep renewing it while
    the body runs, so that a call streaming longer than the lease is not taken for a dead
    one's; and note on the call when its outcome is unknown (see settle)."""
    key = call.idempotency_key
    if key is None or call.agent is None or call.tool is None:
        yield
        return
    agent, lease = call.agent.id, lease_s(call.tool)
    try:
        still_mine = await svc.idempotency.sending(agent, key, call.request_id, lease)
    except Exception:
        log.exception(
            "cannot mark an idempotency claim sent", extra={"request_id": call.request_id}
        )
        raise _store_failed() from None
    if not still_mine:
        raise GatewayError(
            ErrorCode.IDEMPOTENCY_IN_FLIGHT,
            "another call with this Idempotency-Key took it over while this one waited, so "
            "nothing was sent; retry later with the same key to get its answer",
            headers={"Retry-After": "1"},
        )

    renew = functools.partial(svc.idempotency.renew, agent, key, call.request_id, lease)
    try:
        async with renewed(renew, lease, "idempotency claim", {"request_id": call.request_id}):
            yield
        if call.captured is None:  # the answer was passed on but not kept: not replayable
            call.outcome_unknown = "broken_answer"
    except GatewayError as error:
        if not error.nothing_sent:
            timed_out = error.code is ErrorCode.UPSTREAM_TIMEOUT
            call.outcome_unknown = _after_sending(call, "timeout" if timed_out else "no_answer")
        raise
    except asyncio.CancelledError:
        call.outcome_unknown = "cut_short"
        raise
    except Exception:
        call.outcome_unknown = _after_sending(call, "cut_short")
        raise


def _after_sending(call: Call, why: str) -> str:
    """Why the outcome is unknown: once the tool's answer had begun, it broke off."""
    return "broken_answer" if call.upstream_status is not None else why


async def settle(call: Call, svc: Services) -> None:
    """After the response: keep it for replays; keep the mark of an unknown outcome, so
    that the call is never sent again with its key; or, when nothing was sent (or the tool
    honours the key itself), let go of the key, so that a retry runs for real."""
    key = call.idempotency_key
    if key is None or call.agent is None:
        return
    agent = call.agent.id
    resend = call.tool is not None and call.tool.idempotency_upstream
    kept = call.captured
    if kept is None and call.outcome_unknown is not None and not resend:
        kept = {"outcome_unknown": call.outcome_unknown}
    try:
        if kept is not None:
            if not await svc.idempotency.answer(agent, key, call.request_id, kept):
                log.warning(
                    "the answer was not kept for replays: the idempotency claim was no "
                    "longer this call's",
                    extra={"request_id": call.request_id},
                )
        else:
            await svc.idempotency.release(agent, key, call.request_id)
    except Exception:
        # The agent still gets its answer. The claim stays unanswered until its lease runs
        # out: then a retry runs if nothing was sent, else it gets the unknown outcome.
        log.exception("cannot settle an idempotency key", extra={"request_id": call.request_id})
    finally:
        svc.waiters.notify(waiter(agent, key))


async def purge_forever(svc: Services) -> None:
    while True:
        await asyncio.sleep(60)
        # Retried in a minute; expired keys are ignored when read anyway.
        with contextlib.suppress(Exception):
            await svc.idempotency.purge()
