"""The agent listener's aiohttp application: tool calls, and agents polling their parked
actions (the admin listener is gateway/admin/)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import HttpVersion11, web

from gateway.approvals import recovery
from gateway.approvals.agent_view import agent_action
from gateway.call import Call
from gateway.errors import ErrorCode, GatewayError, render
from gateway.observability.ids import new_request_id
from gateway.pipeline import idempotency, run_stages
from gateway.services import SERVICES, Services

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_FIELD_BYTES = 16384  # one header line, name and value


async def handle_call(request: web.Request) -> web.StreamResponse:
    call = Call(request=request, request_id=new_request_id(), received=time.perf_counter())
    return await run_stages(call, request.app[SERVICES])


@web.middleware
async def refuse_unrouted(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Whatever the router cannot place (`/other`, `OPTIONS *`, `CONNECT host:443`) gets
    the same JSON error as everything else, not aiohttp's plain-text 404."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return render(
            GatewayError(
                ErrorCode.UNKNOWN_TOOL, "this gateway serves tools only, as /tools/<tool>/<path>"
            ),
            new_request_id(),
        )


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """`Expect: 100-continue` as aiohttp answers it (go on, on HTTP/1.1); any other
    expectation gets the gateway's JSON 417 instead of aiohttp's plain-text one (RFC 9110,
    10.1.1: a server may refuse an expectation it does not know)."""
    expect = request.headers.get("Expect", "")
    if request.version != HttpVersion11:
        return None
    if expect.lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the answer's own bytes start after it
        return None
    return render(
        GatewayError(
            ErrorCode.EXPECTATION_FAILED,
            "the only Expect this gateway understands is 100-continue; send the call without it",
        ),
        new_request_id(),
    )


def create_agent_app(svc: Services) -> web.Application:
    """The agent listener. It owns the lifetime of the audit log and the client session."""
    protection = svc.config.protection
    app = web.Application(
        middlewares=[refuse_unrouted],
        # aiohttp's parser refuses past these before any gateway code runs; the listener
        # (gateway.listener) caps the bytes of a whole head and the time to send it.
        handler_args={
            "max_field_size": min(MAX_FIELD_BYTES, protection.max_header_bytes),
            "max_headers": protection.max_headers,
            "keepalive_timeout": protection.keepalive_timeout_s,
        },
    )
    app[SERVICES] = svc

    async def services(_app: web.Application) -> AsyncIterator[None]:
        await svc.start()
        await recovery.recover(svc)
        svc.spawn(idempotency.purge_forever(svc), loop=True)
        svc.spawn(svc.record_refusals_shed_forever(), loop=True)
        yield
        await svc.close()

    app.cleanup_ctx.append(services)
    # [\s\S]: the router matches the decoded path, and `%0a` must reach route's checks.
    app.router.add_route("*", r"/tools/{tail:[\s\S]*}", handle_call, expect_handler=expect_continue)
    app.router.add_get("/actions/{id}", agent_action)
    return app
