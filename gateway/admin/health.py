"""What monitoring reads, without a token (docs/operations.md, "Metrics and health"): `/metrics` for
Prometheus, `/healthz` (the process answers) and `/readyz` (policies loaded, audit log
writable, every JWT issuer's keys fetched, the approvers' identity provider's too, limits
storage answering)."""

from __future__ import annotations

import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from gateway.approvals import backlog
from gateway.services import SERVICES
from gateway.workers import is_worker


async def metrics(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    registry = svc.metrics.registry
    if is_worker():  # every worker of the group, from their shared folder
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    # The pending actions are the store's, the same whichever process answers.
    pending = await backlog.exposition(svc, time.time())
    return web.Response(
        body=generate_latest(registry) + pending, headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    policies = svc.policies
    details = {
        "policy_version": policies.policy_version or None,
        "policy_last_failure": policies.last_failure.as_json() if policies.last_failure else None,
    }
    if svc.notices is not None:  # polling without them: still ready, only slower to wake
        details["store_notices"] = "listening" if svc.notices.listening else "polling"
    if policies.served is None:
        return web.json_response(
            {"status": "not ready", "policy": "not loaded", **details}, status=503
        )
    if svc.audit is not None and not svc.audit.available:
        return web.json_response(
            {"status": "not ready", "audit": svc.audit.failure or "not open", **details}, status=503
        )
    if svc.identity is not None and svc.identity.unready:
        return web.json_response(
            {"status": "not ready", "identity": svc.identity.unready, **details}, status=503
        )
    if svc.sso is not None and svc.sso.verifier.unready:
        return web.json_response(
            {"status": "not ready", "approvers_sso": svc.sso.verifier.unready, **details},
            status=503,
        )
    limits = await svc.limiter.unavailable()
    if limits is not None:
        return web.json_response({"status": "not ready", "limits": limits, **details}, status=503)
    return web.json_response({"status": "ready", **details})
