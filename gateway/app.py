"""The two aiohttp applications: the agent listener and the admin listener."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.approvals import lifecycle
from gateway.approvals.api import add_admin_routes, agent_action, json_errors
from gateway.approvals.ui import add_ui_routes
from gateway.call import Call
from gateway.config import Config
from gateway.errors import ErrorCode, GatewayError, render
from gateway.observability.ids import new_request_id
from gateway.operator_api import add_operator_routes
from gateway.pipeline import idempotency, run_stages
from gateway.policy_api import add_policy_routes
from gateway.services import SERVICES, Services

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_FIELD_BYTES = 16384  # one header line, name and value

log = logging.getLogger(__name__)


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
        await lifecycle.recover(svc)
        svc.spawn(idempotency.purge_forever(svc), loop=True)
        svc.spawn(svc.record_refusals_shed_forever(), loop=True)
        yield
        await svc.close()

    app.cleanup_ctx.append(services)
    # [\s\S]: the router matches the decoded path, and `%0a` must reach route's checks.
    app.router.add_route("*", r"/tools/{tail:[\s\S]*}", handle_call)
    app.router.add_get("/actions/{id}", agent_action)
    return app


async def metrics(request: web.Request) -> web.Response:
    registry = request.app[SERVICES].metrics.registry
    return web.Response(
        body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    policies = svc.policies
    details = {
        "policy_version": policies.version or None,
        "policy_last_failure": policies.last_failure.as_json() if policies.last_failure else None,
    }
    if policies.served is None:
        return web.json_response(
            {"status": "not ready", "policy": "not loaded", **details}, status=503
        )
    if svc.audit is not None and not svc.audit.available:
        return web.json_response(
            {"status": "not ready", "audit": svc.audit.failure or "not open", **details}, status=503
        )
    return web.json_response({"status": "ready", **details})


def create_admin_app(svc: Services) -> web.Application:
    app = web.Application(middlewares=[json_errors])
    app[SERVICES] = svc
    add_admin_routes(app)
    add_operator_routes(app)
    add_policy_routes(app)
    add_ui_routes(app)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def build_apps(config: Config) -> tuple[web.Application, web.Application]:
    """Both listeners over one set of services; their start-up raises PolicyLoadError on
    bad policies."""
    svc = Services.from_config(config)
    return create_agent_app(svc), create_admin_app(svc)
