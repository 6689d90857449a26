"""Run both listeners until SIGINT/SIGTERM, on uvloop where it is installed."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import web

from gateway.app import build_apps
from gateway.audit.events import event
from gateway.audit.log import AuditLog
from gateway.config import Config
from gateway.observability.metrics import Metrics
from gateway.policy.engine import PolicyLoadError
from gateway.services import SERVICES as SERVICES_KEY

log = logging.getLogger(__name__)


async def start(config: Config) -> list[web.AppRunner]:
    """Start the agent and admin listeners; the caller cleans the runners up."""
    try:
        agent_app, admin_app = build_apps(config)
    except PolicyLoadError as exc:
        await _record_refused_start(config, exc.problems)
        raise
    runners = []
    try:
        for app, listener in ((agent_app, config.listen), (admin_app, config.admin)):
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, listener.host, listener.port).start()
    except BaseException:
        for runner in reversed(runners):
            await runner.cleanup()
        raise
    log.info(
        "callgate listening",
        extra={
            "agent_listener": f"http://{config.listen.host}:{config.listen.port}",
            "admin_listener": f"http://{config.admin.host}:{config.admin.port}",
            "policy_version": agent_app[SERVICES_KEY].engine.version,
            "tools": sorted(t.name for t in config.tools),
        },
    )
    return runners


async def _record_refused_start(config: Config, problems: list[str]) -> None:
    """The audit log says why the gateway did not start, when it can be written."""
    if not config.audit.enabled:
        return
    audit = AuditLog(config.audit.path, config.audit.synchronous, Metrics())
    try:
        await audit.open()
    except Exception as exc:  # the policy problem is the error to report, not this one
        log.error("audit log unavailable at start-up", extra={"error": str(exc)})
        return
    audit.append(event("policy_load_failed", path=str(config.policy.path), problems=list(problems)))
    await audit.close()


async def serve_until_stopped(
    config: Config, started: Callable[[], Awaitable[None]] | None = None
) -> None:
    runners = await start(config)
    # Start-up objects (config, policies, modules) live for the whole run: keep them out
    # of every later garbage collection.
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if started is not None:
            await started()
        await stop.wait()
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
        log.info("callgate stopped")


def run(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)
