"""`callgate serve --workers N`: N gateway processes on the same ports.

Each worker is a whole `callgate serve` process with its own event loop, policy engine and
upstream connection pool; the kernel spreads connections over them (SO_REUSEPORT). They
share what must be shared through PostgreSQL and Redis (docs/deployment.md, "Running many
replicas"), which is why several workers need those. `/metrics` on the admin port, whichever
worker answers it, reports the whole group: the workers write their metrics to one folder
(prometheus-client's multiprocess mode), made here and removed at the end.

This process only supervises: SIGTERM or SIGINT stops every worker (each finishes its
calls in progress), SIGHUP is passed on (policy reload). A worker that dies is started
again; one that refuses to start (exit status 2: config, policies, ports) stops the group
with that status.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gateway.config import POSTGRESQL_PREFIX, Config

log = logging.getLogger(__name__)

# Set in the workers' environment: listen with SO_REUSEPORT, metrics in this folder.
WORKER_ENV = "CALLGATE_WORKER"
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
REFUSED = 2  # the exit status of a serve that cannot start
RESTART_DELAY_S = 1.0


def problems(config: Config) -> list[str]:
    """Why `config` cannot be served by several processes (workers or replicas): what they
    must share is on PostgreSQL and Redis, not in one process's memory or files."""
    found = []
    if config.limits.redis_url is None:
        found.append(
            "limits.storage: memory limits count in each process apart; several processes "
            "need one Redis (a redis:// URL)"
        )
    if not config.storage.url.startswith(POSTGRESQL_PREFIX):
        found.append(
            "storage.url: a SQLite file belongs to one process; several processes need "
            "PostgreSQL (a postgresql:// URL)"
        )
    if config.audit.enabled and not config.audit.url.startswith(POSTGRESQL_PREFIX):
        found.append(
            "audit.url: a SQLite audit log belongs to one process; several processes need "
            "PostgreSQL (a postgresql:// URL), one chain for all of them"
        )
    return found


def is_worker() -> bool:
    return os.environ.get(WORKER_ENV) == "1"


def supervise(config_path: Path, log_level: str, count: int) -> int:
    """Run `count` workers until signalled; the exit status of the group."""
    metrics_dir = tempfile.mkdtemp(prefix="callgate-metrics-")
    env = {**os.environ, WORKER_ENV: "1", METRICS_DIR_ENV: metrics_dir}
    argv = [sys.executable, "-m", "gateway", "serve", "--config", str(config_path)]
    argv += ["--log-level", log_level]
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            _signal(worker, signum)

    def reload(signum: int, _frame: object) -> None:
        for worker in workers:
            _signal(worker, signum)

    workers = [subprocess.Popen(argv, env=env) for _ in range(count)]
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    log.info("callgate workers started", extra={"workers": [w.pid for w in workers]})
    status = 0
    try:
        while workers:
            try:
                pid, wait_status = os.wait()
            except ChildProcessError:
                break
            ended = next((w for w in workers if w.pid == pid), None)
            if ended is None:
                continue
            ended.returncode = os.waitstatus_to_exitcode(wait_status)
            workers.remove(ended)
            _forget_metrics(pid, metrics_dir)
            if stopping:
                continue
            if ended.returncode == REFUSED:
                log.error("a worker could not start: stopping the group", extra={"pid": pid})
                status = REFUSED
                stop(signal.SIGTERM, None)
                continue
            log.error(
                "a worker ended; starting another",
                extra={"pid": pid, "status": ended.returncode},
            )
            time.sleep(RESTART_DELAY_S)
            if not stopping:
                workers.append(subprocess.Popen(argv, env=env))
    finally:
        for worker in workers:
            _signal(worker, signal.SIGKILL)
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return status


def _signal(worker: subprocess.Popen[bytes], signum: int) -> None:
    if worker.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            worker.send_signal(signum)


def _forget_metrics(pid: int, metrics_dir: str) -> None:
    """The gauges of a worker that ended no longer count (`live*` modes)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, metrics_dir)  # type: ignore[no-untyped-call]
