"""What a stage is: `run(call, svc)`, or an around-stage that wraps the rest."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from gateway.call import Call
from gateway.services import Services

# A stage returns None to let the call go on, raises GatewayError to refuse it, or
# returns the response.
Stage = Callable[[Call, Services], Awaitable[web.StreamResponse | None]]

# The stages after an around-stage, run as one: it answers or raises as they do.
Rest = Callable[[], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Around:
    """A stage that runs code before and after the rest of the pipeline (as aiohttp's
    middlewares do): `wrap(call, svc, rest)` answers, with or without running `rest`."""

    wrap: Callable[[Call, Services, Rest], Awaitable[web.StreamResponse]]
