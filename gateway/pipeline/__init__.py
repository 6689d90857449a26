"""The pipeline of one tool call: the stages in the order they run.

Each stage is a module with `async def run(call, svc)`. A stage returns None to let the
call go on, raises `GatewayError` to refuse it, or (the last one) returns the response.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.call import Call
from gateway.pipeline import (
    admit,
    approval,
    decide,
    describe,
    forward,
    idempotency,
    identify,
    intent,
    limits,
    route,
    switches,
)
from gateway.services import Services

Stage = Callable[[Call, Services], Awaitable[web.StreamResponse | None]]

STAGES: tuple[tuple[str, Stage], ...] = (
    # Authentication first: nothing about tools or policies is revealed to a stranger.
    ("identify", identify.run),
    # Resolve the tool and check the path before reading any body or asking the policy.
    ("route", route.run),
    # Kill switches: the cheapest refusal once agent and tool are known, before the body
    # is read or the policy asked.
    ("switches", switches.run),
    # A slot among the calls in progress, after the refusals that need none and before the
    # body is read (a slow upload holds one too); handle_call gives it back once answered.
    ("admit", admit.run),
    # Read the (size-limited) body and build the policy input.
    ("describe", describe.run),
    # The policy decides on the full input; deny and engine failure both stop here.
    ("decide", decide.run),
    # Replays and in-flight duplicates are answered here, so they never count against
    # limits or trip the loop breaker.
    ("idempotency", idempotency.run),
    # Limits count calls the policy allows, parked ones included, so a loop of calls
    # needing approval is broken too.
    ("limits", limits.run),
    # A call that needs a human is parked here: nothing after this runs for it now.
    ("approval", approval.run),
    # The audit log holds the decision and the intent before anything leaves the gateway.
    ("intent", intent.run),
    # Only an allowed, recorded call reaches the upstream.
    ("forward", forward.run),
)


async def run_stages(call: Call, svc: Services) -> web.StreamResponse:
    for _name, stage in STAGES:
        response = await stage(call, svc)
        if response is not None:
            return response
    raise RuntimeError("the pipeline ended without a response")
