"""Run both listeners until SIGINT/SIGTERM, on uvloop where it is installed.

At start the soft limit on open files is raised to the hard one: every agent connection
and every upstream connection is a file, and at a soft limit of 1,024 a few idle
connections would make every other call fail (see docs/limits.md, Connections and fairness).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import web

from gateway.admin import create_admin_app
from gateway.app import create_agent_app
from gateway.config import Config
from gateway.listener import AgentRunner
from gateway.services import SERVICES as SERVICES_KEY
from gateway.services import Services
from gateway.workers import is_worker

log = logging.getLogger(__name__)


def build_apps(config: Config) -> tuple[web.Application, web.Application]:
    """Both listeners over one set of services; their start-up raises PolicyLoadError on
    bad policies."""
    svc = Services.from_config(config)
    return create_agent_app(svc), create_admin_app(svc)


async def start(config: Config) -> tuple[list[web.AppRunner], Services]:
    """Start the agent and admin listeners; the caller cleans the runners up. Raises
    PolicyLoadError (already audited) when the policies cannot be served."""
    open_files = raise_open_files_limit()
    agent_app, admin_app = build_apps(config)
    runners: list[web.AppRunner] = []
    listeners = (
        (
            AgentRunner(agent_app, config.protection, access_log=None, handle_signals=False),
            config.listen,
        ),
        (web.AppRunner(admin_app, access_log=None, handle_signals=False), config.admin),
    )
    try:
        for runner, listener in listeners:
            await runner.setup()
            runners.append(runner)
            # Workers of one group listen on the same ports (gateway/workers.py).
            site = web.TCPSite(runner, listener.host, listener.port, reuse_port=is_worker())
            await site.start()
    except BaseException:
        for runner in reversed(runners):
            await runner.cleanup()
        raise
    svc = agent_app[SERVICES_KEY]
    log.info(
        "callgate listening",
        extra={
            "agent_listener": f"http://{config.listen.host}:{config.listen.port}",
            "admin_listener": f"http://{config.admin.host}:{config.admin.port}",
            "policy_version": svc.policies.policy_version,
            "tools": sorted(t.name for t in config.tools),
            "open_files_limit": open_files,
        },
    )
    return runners, svc


UNLIMITED_OPEN_FILES = 1_048_576  # Linux's default fs.nr_open


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit cannot be the soft one (Linux caps it at fs.nr_open).
    target = hard if hard != resource.RLIM_INFINITY else UNLIMITED_OPEN_FILES
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:  # an unlimited hard limit may not be settable
            log.warning(
                "could not raise the open files limit",
                extra={"soft": soft, "hard": hard, "error": str(exc)},
            )
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft


async def _reload(svc: Services) -> None:
    """SIGHUP: reload the tools' OpenAPI documents, the enforced set and the shadow set."""
    await svc.reload_specs("signal", "SIGHUP")
    for policies in (svc.policies, svc.shadow):
        if policies is not None:
            await policies.try_reload("signal", "SIGHUP")


async def serve_until_stopped(
    config: Config, started: Callable[[], Awaitable[None]] | None = None
) -> None:
    runners, svc = await start(config)
    # Start-up objects (config, policies, modules) live for the whole run: keep them out
    # of every later garbage collection.
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: svc.spawn(_reload(svc)))
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
