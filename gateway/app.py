"""The two aiohttp applications: the agent listener and the admin listener."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.approvals import lifecycle
from gateway.approvals.api import add_admin_routes, agent_action, json_errors
from gateway.approvals.ui import add_ui_routes
from gateway.audit import shedding
from gateway.audit.records import decision_record, outcome_record
from gateway.audit.shedding import SHEDDABLE
from gateway.call import Call
from gateway.config import Config
from gateway.errors import AgentGone, ErrorCode, GatewayError, StreamBroken, render
from gateway.mcp.refusals import refusal
from gateway.observability.ids import new_request_id
from gateway.observability.metrics import UNKNOWN
from gateway.operator_api import add_operator_routes
from gateway.pipeline import describe, idempotency, run_stages
from gateway.policy_api import add_policy_routes
from gateway.services import SERVICES, Services

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_FIELD_BYTES = 16384  # one header line, name and value

log = logging.getLogger(__name__)


async def handle_call(request: web.Request) -> web.StreamResponse:
    svc = request.app[SERVICES]
    call = Call(request=request, request_id=new_request_id(), received=time.perf_counter())
    try:
        return await _handle(call, svc)
    finally:
        # Every path ends here, cancellation included: after a streamed answer (forward
        # streams it inside the pipeline) has been sent, and before aiohttp writes a
        # small one the handler returns (an error, a replay), which costs nothing.
        svc.in_flight.give_back(call.held)


async def _handle(call: Call, svc: Services) -> web.StreamResponse:
    request = call.request
    reason = None  # why the call was refused (not the exception: it holds a frame cycle)
    try:
        response = await run_stages(call, svc)
        if call.replayed:
            outcome = "replayed"  # an Idempotency-Key's stored answer; the tool was not called
        elif call.action_id is None:
            outcome = "forwarded"
        else:  # parked: still pending (202), or held until it was executed
            pending = response.status == 202 or call.pending_answer
            outcome = "pending_approval" if pending else "approved"
    except GatewayError as error:
        reason = error.message
        response = await _refusal(call, error, svc)
        outcome = error.code.value
    except StreamBroken as broken:
        # Abort, so the agent sees a failed transfer, never a short body that looks whole.
        if request.transport is not None:
            request.transport.abort()
        response = broken.response
        outcome = "stream_broken"
    except AgentGone:  # nothing was sent, and nobody reads the answer
        response = web.Response(status=499)
        outcome = "agent_disconnected"
    except asyncio.CancelledError:
        # Only with handler_cancellation on: the agent hung up; the call is still counted.
        _account(call, svc, "agent_disconnected", 499, None)
        svc.spawn(idempotency.settle(call, svc), loop=True)
        raise
    except Exception:
        log.exception("unexpected failure", extra={"request_id": call.request_id})
        allowed = call.decision is not None and call.decision.allow  # forward may have begun
        message = (
            "the gateway failed while handling this call; nothing was sent"
            if not allowed
            else "the gateway failed while forwarding this call; "
            "it may or may not have taken effect"
        )
        reason = message
        response = render(GatewayError(ErrorCode.INTERNAL_ERROR, message), call.request_id)
        outcome = ErrorCode.INTERNAL_ERROR.value
    _account(call, svc, outcome, response.status, reason)
    await idempotency.settle(call, svc)
    return response


async def _refusal(call: Call, error: GatewayError, svc: Services) -> web.Response:
    """The error of docs/errors.md; for an MCP tool, in the MCP form
    the model reads (refused before its body was read: the body is read now, for the
    JSON-RPC id; not when shedding load, which must stay cheap)."""
    if call.tool is not None and call.tool.kind == "mcp":
        load_shed = error.code == ErrorCode.TOOL_BUSY
        if not call.body_read and call.request.method == "POST" and not load_shed:
            try:
                await describe.read_request(call, svc.config.protection.max_json_depth)
            except GatewayError:
                pass  # unreadable: the refusal answers without an id
            except Exception:
                log.exception("unreadable refused call", extra={"request_id": call.request_id})
        answered = refusal(call.mcp, error, call.request_id)
        if answered is not None:
            return answered
    return render(error, call.request_id)


def _account(call: Call, svc: Services, outcome: str, status: int, reason: str | None) -> None:
    """Metrics, the one access-log line and the closing audit record of every call."""
    if svc.audit is not None:
        if call.intent_recorded:
            error = None if outcome == "forwarded" else outcome
            svc.audit.append(outcome_record(call, status, error))
        elif outcome not in SHEDDABLE or _record_refusal(call, svc, outcome):
            svc.audit.append(
                decision_record(
                    call,
                    svc.config.audit.record_bodies,
                    code=outcome,
                    reason=reason,
                    status=status,
                )
            )
    elapsed = time.perf_counter() - call.received
    tool = call.tool.name if call.tool else UNKNOWN
    agent = call.agent.id if call.agent else UNKNOWN
    svc.metrics.requests.labels(tool, agent, outcome).inc()
    if call.mcp is not None:
        svc.metrics.mcp_requests.labels(tool, call.mcp.metric_method, outcome).inc()
    svc.metrics.gateway_latency.labels(tool).observe(elapsed)
    decision = call.decision
    svc.access_log.write(
        {
            "request_id": call.request_id,
            "agent": agent,
            "tool": tool,
            "method": call.request.method,
            "path": call.path,
            "decision": None if decision is None else ("allow" if decision.allow else "deny"),
            "policy_version": decision.policy_version if decision else None,
            "outcome": outcome,
            "status": status,
            "latency_ms": round(elapsed * 1000, 3),
        },
    )


def _record_refusal(call: Call, svc: Services, outcome: str) -> bool:
    """Whether this refusal gets an audit record of its own; past the limit of its agent
    (or client address, before the agent is known) it is only counted (audit/shedding.py)."""
    if call.agent is not None:
        by, who = shedding.AGENT, call.agent.id
    else:
        by, who = shedding.CLIENT, call.request.remote or UNKNOWN
    recorded, due = svc.refusals.count(by, who, outcome)
    svc.record_refusals_shed(due)
    if not recorded:
        svc.metrics.refusals_shed.labels(by).inc()
    return recorded


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
