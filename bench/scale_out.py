#!/usr/bin/env python3
"""Scale-out of callgate: the load of bench/proxy_overhead.py against the deployments of
docs/deployment.md, "Running many replicas", in one run.

    python bench/scale_out.py [--duration 10] [--connections 50] [--json]
        [--postgres postgresql://postgres@127.0.0.1:5432/test] [--redis redis://127.0.0.1:6379/0]

The same upstream, agent, tool, default policies and audit log on (synchronous NORMAL),
with each of these behind the gateway, one after the other:

- `sqlite`: one process on its SQLite files and in-memory limits (the default);
- `postgres+redis`: one process with its store and audit log on PostgreSQL (a schema of
  its own, made by `callgate db upgrade`) and its limits on Redis (a key prefix of its own);
- `workers-2`: `callgate serve --workers 2` on the same PostgreSQL and Redis, when that
  option exists.

A deployment this callgate cannot serve (the config is refused, say) is reported with the
reason instead of figures. For each, after a warm-up, it drives the load and prints
requests/s, p50/p99 latency and the ratio of each to the `sqlite` process. The team's
targets are printed next to the results, not asserted. These machines have two cores
shared with the load generator and the upstream: scaling is partial here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import proxy_overhead as bench
import yaml

TARGET_SHARED_RATIO = 0.8  # PostgreSQL+Redis at one process, against the SQLite process
DEPLOYMENTS = ("sqlite", "postgres+redis", "workers-2")


def _with_schema(url: str, schema: str) -> str:
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}"


def _create_schema(url: str, schema: str, drop: bool = False) -> None:
    import asyncio

    import asyncpg

    async def run() -> None:
        connection = await asyncpg.connect(url)
        try:
            statement = (
                f"DROP SCHEMA IF EXISTS {schema} CASCADE" if drop else f"CREATE SCHEMA {schema}"
            )
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run())


def write_config(
    tmp: Path, name: str, upstream_port: int, ports: list[int], shared: dict[str, str]
) -> Path:
    listen, admin = ports
    path = bench.write_config(tmp, "audit-normal", upstream_port, listen, admin)
    tree = yaml.safe_load(path.read_text())
    if name != "sqlite":
        tree["storage"] = {"url": shared["postgres"]}
        tree["audit"] = {**tree["audit"], "url": shared["postgres"]}
        tree["limits"] = {
            **tree["limits"],
            "storage": shared["redis"],
            "key_prefix": shared["prefix"],
        }
    config = tmp / f"{name}.yaml"
    config.write_text(yaml.safe_dump(tree, sort_keys=False))
    return config


def _refusal(argv: list[str], env: dict[str, str]) -> str | None:
    """Why callgate refuses this command, or None when it accepts it."""
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False, timeout=60)
    if done.returncode == 0:
        return None
    said = (done.stderr or done.stdout).strip().splitlines()
    return said[-1] if said else f"exit {done.returncode}"


def run(args: argparse.Namespace, procs: bench.Procs, tmp: Path) -> dict[str, Any]:
    gateway_cpus, load_cpus, pin_text = bench.plan_cpus(not args.no_pin)
    if load_cpus:
        os.sched_setaffinity(0, load_cpus)
    wrk = shutil.which("wrk")
    loadgen = bench.LoadGen(
        "wrk" if wrk else "python",
        load_cpus,
        procs,
        tmp,
        wrk=wrk,
        threads=len(load_cpus or os.sched_getaffinity(0)),
    )
    upstream_port, *ports = bench.free_ports(1 + 2 * len(DEPLOYMENTS))
    upstream = procs.start(
        [sys.executable, str(Path(bench.__file__).resolve()), "_upstream", str(upstream_port)],
        load_cpus,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    bench.read_ready_line(upstream, "the upstream")
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    shared = {
        "postgres": _with_schema(args.postgres, schema),
        "redis": args.redis,
        "prefix": f"callgate-bench-{schema}:",
    }
    env = {**os.environ, "RUST_LIB_BACKTRACE": "0"}
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {bench.AGENT_TOKEN}"}
    results: dict[str, Any] = {"pinning": pin_text, "loadgen": loadgen.describe()}
    try:
        _create_schema(args.postgres, schema)
        schema_ready = True
    except Exception as exc:
        schema_ready = False
        results["postgres_error"] = f"{type(exc).__name__}: {exc}"
    try:
        for i, name in enumerate(DEPLOYMENTS):
            listen, admin = ports[2 * i : 2 * i + 2]
            config = write_config(tmp, name, upstream_port, [listen, admin], shared)
            serve = [*bench.callgate_argv(), "serve", "--config", str(config)]
            if name == "workers-2":
                serve += ["--workers", "2"]
            why = None
            if name != "sqlite" and not schema_ready:
                why = f"PostgreSQL: {results['postgres_error']}"
            if why is None and name != "sqlite":
                why = _refusal(
                    [*bench.callgate_argv(), "db", "upgrade", "--config", str(config)], env
                )
            if why is None:
                why = _refusal([*bench.callgate_argv(), "config", "check", str(config)], env)
            if why is None and name == "workers-2":
                help_text = subprocess.run(
                    [*bench.callgate_argv(), "serve", "--help"],
                    capture_output=True,
                    text=True,
                    env=env,
                    check=False,
                ).stdout
                why = None if "--workers" in help_text else "this callgate has no `serve --workers`"
            if why is not None:
                bench.log(f"{name}: not measured: {why}")
                results[name] = {"not_measured": why}
                continue
            log_path = tmp / f"{name}.log"
            with log_path.open("wb") as out:
                proc = procs.start(serve, gateway_cpus, stdout=out, stderr=out, env=env)
            bench.wait_ready(proc, f"http://127.0.0.1:{admin}/readyz", log_path)
            url = f"http://127.0.0.1:{listen}/tools/{bench.TOOL}{bench.CALL_PATH}"
            bench.check_call(url, headers, name)
            bench.log(f"{name}: {args.warmup}s warm-up, {args.duration}s measured")
            if args.warmup:
                loadgen.run(url, headers, args.connections, args.warmup)
            measured = loadgen.run(url, headers, args.connections, args.duration)
            procs.stop(proc)
            results[name] = {
                "rps": measured["rps"],
                "p50_us": measured.get("p50_us"),
                "p99_us": measured.get("p99_us"),
                "errors": measured.get("errors"),
            }
    finally:
        if schema_ready:
            _create_schema(args.postgres, schema, drop=True)
    return results


def report(results: dict[str, Any], connections: int) -> str:
    base = results.get("sqlite", {}).get("rps")
    lines = [f"load: {results['loadgen']}; pinning: {results['pinning']}", ""]
    for name in DEPLOYMENTS:
        found = results.get(name, {})
        if "rps" not in found:
            lines.append(f"{name:15} not measured: {found.get('not_measured', 'no result')}")
            continue
        ratio = f"{found['rps'] / base:.2f}x sqlite" if base else "-"
        lines.append(
            f"{name:15} {found['rps']:8,.0f} req/s at {connections} connections, "
            f"p50 {bench.fmt_us(found['p50_us'])} µs, "
            f"p99 {bench.fmt_us(found['p99_us'])} µs  ({ratio})"
        )
    shared = results.get("postgres+redis", {}).get("rps")
    lines += ["", "targets (informational, not asserted):"]
    if shared and base:
        met = "met" if shared / base >= TARGET_SHARED_RATIO else "NOT met"
        lines.append(
            f"  postgres+redis >= {TARGET_SHARED_RATIO}x sqlite: {shared / base:.2f}x -> {met}"
        )
    else:
        lines.append(f"  postgres+redis >= {TARGET_SHARED_RATIO}x sqlite: not measured")
    workers = results.get("workers-2", {}).get("rps")
    if workers and shared:
        lines.append(f"  workers-2 above one process: {workers / shared:.2f}x postgres+redis")
    else:
        lines.append("  workers-2 above one process: not measured")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=bench.positive_int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--connections", type=bench.positive_int, default=50)
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "CALLGATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument(
        "--redis", default=os.environ.get("CALLGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    results = bench.run_in_a_temporary_folder(
        "callgate-scale-", lambda procs, tmp: run(args, procs, tmp)
    )
    if isinstance(results, int):
        return results
    print(json.dumps(results, indent=2) if args.json else report(results, args.connections))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
