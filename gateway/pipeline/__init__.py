"""The pipeline of one tool call: the stages in the order they run.

Each stage is a module with `async def run(call, svc)`, or an around-stage (`Around`) that
wraps all the stages after it, as aiohttp's middlewares do (gateway/pipeline/stage.py). A
stage returns None to let the call go on, raises `GatewayError` to refuse it, or (the last
one) returns the response. Stages never call each other: they share what they learn on the
`Call`. Where a protocol differs (MCP), a stage asks `hooks.of(call)`.
"""

from __future__ import annotations

import functools

from aiohttp import web

from gateway.call import Call
from gateway.pipeline import (
    account,
    admit,
    approval,
    decide,
    describe,
    forward,
    idempotency,
    identify,
    intent,
    limits,
    operation,
    route,
    switches,
)
from gateway.pipeline.stage import Around, Stage
from gateway.services import Services

STAGES: tuple[tuple[str, Stage | Around], ...] = (
    # Every call ends here: its refusal's response, its metrics, its access-log line and
    # its closing audit record.
    ("account", Around(account.around)),
    # Authentication first: nothing about tools or policies is revealed to a stranger.
    ("identify", identify.run),
    # Resolve the tool and check the path before reading any body or asking the policy.
    ("route", route.run),
    # Kill switches: the cheapest refusal once agent and tool are known, before the body
    # is read or the policy asked.
    ("switches", switches.run),
    # A slot among the calls in progress, after the refusals that need none and before the
    # body is read (a slow upload holds one too), given back once the call is answered.
    ("admit", Around(admit.around)),
    # Read the (size-limited) body and build the policy input.
    ("describe", describe.run),
    # A typed tool's call as its OpenAPI document reads it (input.operation); a call that
    # does not match is refused here under validate: enforce, before any policy.
    ("operation", operation.run),
    # The policy decides on the full input; deny and engine failure both stop here.
    ("decide", decide.run),
    # Replays and in-flight duplicates are answered here, so they never count against
    # limits or trip the loop breaker; the key is settled once the call is answered.
    ("idempotency", Around(idempotency.around)),
    # Limits count calls the policy allows, parked ones included, so a loop of calls
    # needing approval is broken too.
    ("limits", limits.run),
    # A call that needs a human is parked here: nothing after this runs for it now.
    ("approval", approval.run),
    # The audit log holds the decision and the intent before anything leaves the gateway.
    ("intent", intent.run),
    # An Idempotency-Key's claim is marked sent, and kept while the tool answers.
    ("sending", Around(idempotency.sending)),
    # Only an allowed, recorded call reaches the upstream.
    ("forward", forward.run),
)


async def run_stages(call: Call, svc: Services, start: int = 0) -> web.StreamResponse:
    for index in range(start, len(STAGES)):
        stage = STAGES[index][1]
        if isinstance(stage, Around):
            return await stage.wrap(call, svc, functools.partial(run_stages, call, svc, index + 1))
        response = await stage(call, svc)
        if response is not None:
            return response
    raise RuntimeError("the pipeline ended without a response")
