#!/usr/bin/env python3
"""Proxy overhead of callgate: the same load directly at an upstream, through a bare aiohttp
proxy (the "floor"), then through the gateway.

    python bench/proxy_overhead.py [--duration 10] [--connections 50] [--json]

Starts, each in its own process (and process group) on 127.0.0.1 ports chosen free:

- an upstream: a tiny aiohttp app on uvloop answering `POST /tickets` (small JSON in,
  small JSON out), which refuses callers without the tool credential;
- the gateway: `callgate serve --config <generated yaml>` with one tool (`demo`, pointing
  at the upstream, with credentials), one agent (role `support`, token as sha256 in the
  yaml) and the repo's default `policies/`, whose role x tool grant allows
  `POST /tickets` for `support` on `demo`: the real default policy is evaluated;
- the floor: a bare aiohttp proxy on uvloop, code in this script, answering
  `POST /tools/demo/tickets` (the gateway's URL shape). It forwards the body to the same
  upstream with the tool credential through one pooled `aiohttp.ClientSession` (as the
  gateway's: `TCPConnector(limit=1024)`, `auto_decompress=False`) and streams the answer back
  (status, Content-Type, Content-Length) with `web.StreamResponse`, and does nothing else:
  no routing table, authentication, policy, metrics or logs. It is what any aiohttp proxy
  costs, so the gateway's CPU per request splits into that floor and callgate's own work.

Then, after a one-request check of the three paths, it drives the same load (wrk with a Lua
script when `wrk` is on PATH, else a Python aiohttp load generator in its own process):
direct at N connections, floor at N, gateway at N (without audit, then with it at each
durability), and the gateway without audit again with a new `Idempotency-Key` on every call
("keyed": what keeping keys in the SQLite store adds); then each of those at 1 connection;
each phase after a short warm-up. It prints requests/s and p50/p99 latency per phase,
gateway/direct and gateway/floor throughput, the p50 latency the gateway adds, and the
gateway's CPU time per request (utime+stime of the gateway process from /proc/<pid>/stat
across the phase, over the requests its /metrics counted). The floor's CPU per request is
measured the same way, over the requests the load generator completed (it has no
/metrics); the gateway's minus the floor's is callgate's own work. With two or more CPUs,
the gateway and the floor are pinned to one CPU (only one of them is loaded at a time) and
the upstream, the load generator and this script to the others.

A typed phase (always first, in this process; `--typed-only` runs only it) measures what a
typed tool (`tools[].openapi`, docs/typed-tools.md) adds per call: resolving the call to its
operation in a realistic document of 50 operations and checking its parameters and JSON
body (the `operation` stage's work, gateway/openapi/), for the call under test and two
others, against the team's target.

The gateway logs at INFO (one JSON access line per call, to a file) as it would in
production; `--log-level WARNING` measures it without. `--logs DIR` keeps its log (and the
upstream's and the floor's stderr).

A measurement, not a test: the team's targets are printed next to the results, not asserted.
Every process it starts is stopped on exit, errors and SIGTERM included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
POLICIES = REPO / "policies"
# `--policy one-rule`: the cheapest policy that allows the call, so that the rest of the
# path is measured (the targets are for it; the default policies are reported too).
ONE_RULE_REGO = """package gateway

import rego.v1

decision := {"allow": true, "reason": "one rule allows every call"}
"""

# The call under test: allowed by policies/data.json (support -> demo: POST /tickets).
TOOL = "demo"
ROLE = "support"
AGENT_ID = "bench-bot"
CALL_PATH = "/tickets"
AGENT_TOKEN = "bench-agent-token-0123456789"
TOOL_SECRET = "bench-tool-secret-0123456789"
BODY = json.dumps({"title": "printer on fire", "priority": 2, "tags": ["hw", "urgent"]})
REPLY = {"id": 4711, "status": "open", "queue": "hardware"}

# The team's targets, against the floor measured in the same run (the full path: audit on,
# NORMAL; meant for --policy one-rule, reported for the default policies too).
TARGET_FLOOR_RATIO = 0.6  # requests/s at N connections, at least this share of the floor's
TARGET_ADDED_P50_OVER_FLOOR_US = 150  # p50 at one connection, at most this over the floor's
TARGET_P99_OVER_FLOOR = 2.0  # p99 at 1 and at N connections, at most this times the floor's
TARGET_FULL_BELOW_NORMAL = 0.10  # audit FULL: at most this much below NORMAL in requests/s
TARGET_TYPED_US = 50  # operation lookup + request validation, small JSON body, per call

# The gateway runs three times, differing only in its audit log: off (the proxy overhead
# itself), and on with each durability setting.
GATEWAYS = {
    "gateway": {"enabled": False},
    "audit-normal": {"synchronous": "NORMAL"},
    "audit-full": {"synchronous": "FULL"},
}
AUDITED = ("audit-normal", "audit-full")
KEYED = "keyed"

CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S = 30


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- child roles


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    from gateway.serve import run  # uvloop where installed, as the gateway runs

    run(main)


async def serve_until_signalled(app: Any, port: int) -> None:
    """Serve `app` on 127.0.0.1:port, say ready on stdout, stop on SIGINT/SIGTERM."""
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"ready": True, "loop": loop_name()}), flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def loop_name() -> str:
    loop = asyncio.get_running_loop()
    return f"{type(loop).__module__}.{type(loop).__name__}"


def upstream_main(port: int) -> None:
    """The tool: POST /tickets -> small JSON, only with the tool credential."""
    from aiohttp import web

    expected = f"Bearer {TOOL_SECRET}"

    async def tickets(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != expected:
            return web.json_response({"error": "missing tool credential"}, status=401)
        ticket = json.loads(await request.read())
        return web.json_response({**REPLY, "title": ticket.get("title")}, status=201)

    async def main() -> None:
        app = web.Application()
        app.router.add_post(CALL_PATH, tickets)
        await serve_until_signalled(app, port)

    run_loop(main())


def floor_main(port: int, upstream_port: int) -> None:
    """The floor: a bare aiohttp proxy to the upstream, with the gateway's client stack."""
    import aiohttp
    from aiohttp import web

    target = f"http://127.0.0.1:{upstream_port}{CALL_PATH}"
    credential = f"Bearer {TOOL_SECRET}"

    async def main() -> None:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1024), auto_decompress=False
        )

        async def forward(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            headers = {"Authorization": credential}
            if content_type := request.headers.get("Content-Type"):
                headers["Content-Type"] = content_type
            upstream = await session.post(target, data=body, headers=headers)
            try:
                response = web.StreamResponse(status=upstream.status)
                if content_type := upstream.headers.get("Content-Type"):
                    response.headers["Content-Type"] = content_type
                if upstream.content_length is not None:
                    response.content_length = upstream.content_length
                try:
                    await response.prepare(request)
                    async for chunk in upstream.content.iter_any():
                        await response.write(chunk)
                    await response.write_eof()
                except Exception:  # the agent hung up (a phase ending): cut, no traceback
                    if request.transport is not None:
                        request.transport.abort()
                return response
            finally:
                upstream.release()

        app = web.Application()
        app.router.add_post(f"/tools/{TOOL}{CALL_PATH}", forward)
        try:
            await serve_until_signalled(app, port)
        finally:
            await session.close()

    run_loop(main())


def loadgen_main(spec_text: str) -> None:
    """Fallback load generator: `connections` aiohttp workers for `duration` seconds."""
    import aiohttp

    spec = json.loads(spec_text)

    async def main() -> None:
        latencies: list[int] = []
        statuses: dict[int, int] = {}
        errors = 0
        body = spec["body"].encode()
        connector = aiohttp.TCPConnector(limit=spec["connections"], force_close=False)
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def worker(deadline: float) -> None:
                nonlocal errors
                while time.perf_counter() < deadline:
                    started = time.perf_counter_ns()
                    headers = spec["headers"]
                    if spec["keyed"]:
                        headers = {**headers, "Idempotency-Key": uuid.uuid4().hex}
                    try:
                        async with session.post(
                            spec["url"], data=body, headers=headers
                        ) as response:
                            await response.read()
                            status = response.status
                    except (aiohttp.ClientError, OSError, TimeoutError):
                        errors += 1
                        continue
                    latencies.append(time.perf_counter_ns() - started)
                    statuses[status] = statuses.get(status, 0) + 1

            cpu_started = time.process_time()
            started = time.perf_counter()
            deadline = started + spec["duration"]
            await asyncio.gather(*(worker(deadline) for _ in range(spec["connections"])))
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
        latencies.sort()

        def pct(p: float) -> float:
            if not latencies:
                return float("nan")
            return latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))] / 1000

        bad = sum(n for s, n in statuses.items() if not 200 <= s < 400)
        result = {
            "requests": len(latencies),
            "duration_s": elapsed,
            "p50_us": pct(50),
            "p90_us": pct(90),
            "p99_us": pct(99),
            "mean_us": sum(latencies) / len(latencies) / 1000 if latencies else float("nan"),
            "max_us": latencies[-1] / 1000 if latencies else float("nan"),
            "errors": {"socket": errors, "status": bad},
            "loop": loop_name(),
            "cpu_s": cpu,
        }
        print("BENCH_RESULT " + json.dumps(result), flush=True)

    run_loop(main())


# --------------------------------------------------------------------------- processes


@dataclass
class Procs:
    """Every child started, so that `stop_all` can end each one's process group."""

    running: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, argv: list[str], cpus: set[int] | None, **kw: Any) -> subprocess.Popen[bytes]:
        def pin() -> None:
            if cpus:
                os.sched_setaffinity(0, cpus)

        proc = subprocess.Popen(argv, start_new_session=True, preexec_fn=pin, **kw)
        self.running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace_s: float = 5) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace_s)
        # The group may outlive its leader; SIGKILL whatever is left of it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace_s)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.running)):
            self.stop(proc)


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a whole process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def gateway_errors(path: Path, limit: int = 3) -> list[str]:
    """The first distinct error/exception lines of the gateway's JSON log."""
    found: list[str] = []
    with contextlib.suppress(OSError), path.open(errors="replace") as f:
        for line in f:
            if '"level": "error"' not in line and '"level": "critical"' not in line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                entry = {"msg": line.strip()}
            exception = str(entry.get("exception", "")).strip().splitlines()
            text = f"{entry.get('msg')}: {exception[-1]}" if exception else str(entry.get("msg"))
            if text not in found:
                found.append(text)
            if len(found) >= limit:
                break
    return found


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no output)"
    # Access lines say nothing about why the gateway stopped.
    kept = [line for line in text if '"logger": "callgate.access"' not in line]
    return "\n".join(kept[-lines:]) or "(no output besides access lines)"


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def read_ready_line(proc: subprocess.Popen[bytes], what: str) -> dict[str, Any]:
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            if line:
                return dict(json.loads(line))
    raise RuntimeError(f"{what} did not start within {START_TIMEOUT_S}s")


def wait_ready(proc: subprocess.Popen[bytes], url: str, log_path: Path) -> dict[str, Any]:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the gateway exited with status {proc.returncode}:\n{tail(log_path)}"
            )
        with contextlib.suppress(OSError):
            status, _, body = http("GET", url)
            if status == 200:
                return dict(json.loads(body))
        time.sleep(0.1)
    raise RuntimeError(f"the gateway was not ready within {START_TIMEOUT_S}s:\n{tail(log_path)}")


def uvloop_loaded(pid: int) -> bool:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as f:
        return "/uvloop/" in f.read()
    return False


def scrape(url: str) -> dict[str, float]:
    """The gateway's counters and histogram sums/counts that the report uses."""
    _, _, body = http("GET", url)
    wanted = {
        "callgate_requests_total": "requests",
        "callgate_request_duration_seconds_sum": "gateway_s",
        "callgate_upstream_duration_seconds_sum": "upstream_s",
        "callgate_policy_evaluation_seconds_sum": "policy_s",
        "callgate_policy_evaluation_seconds_count": "policy_n",
        "callgate_audit_records_total": "audit_records",
        "callgate_audit_flush_seconds_count": "audit_flushes",
        "callgate_audit_flush_seconds_sum": "audit_flush_s",
    }
    out = dict.fromkeys(wanted.values(), 0.0)
    for line in body.decode().splitlines():
        if line.startswith("#"):
            continue
        name, _, rest = line.partition("{") if "{" in line else line.partition(" ")
        key = wanted.get(name.strip())
        if key is None:
            continue
        value = float(line.rsplit(" ", 1)[1])
        out[key] += value
        if key == "requests":  # also per outcome: "outcome:forwarded", "outcome:<code>"
            outcome = rest.split('outcome="', 1)[1].split('"', 1)[0]
            out[f"outcome:{outcome}"] = out.get(f"outcome:{outcome}", 0.0) + value
    return out


# --------------------------------------------------------------------------- load

# For the keyed phases: a new Idempotency-Key on every request, unique across wrk's threads.
WRK_KEYED = """\
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end
local sent = 0
request = function()
  sent = sent + 1
  wrk.headers["Idempotency-Key"] = string.format("bench-%d-%d-%d", os.time(), thread_id, sent)
  return wrk.format()
end
"""


WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = [==[{body}]==]
{headers}
{keyed}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {{"requests": %.0f, "duration_us": %.0f, "p50_us": %.1f, "p90_us": %.1f, '
    .. '"p99_us": %.1f, "mean_us": %.1f, "max_us": %.1f, "connect": %.0f, "read": %.0f, '
    .. '"write": %.0f, "status": %.0f, "timeout": %.0f}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


@dataclass
class LoadGen:
    kind: str  # "wrk" or "python"
    cpus: set[int] | None
    procs: Procs
    tmp: Path
    wrk: str | None = None
    threads: int = 1

    def describe(self) -> str:
        if self.kind == "wrk":
            version = subprocess.run(
                [self.wrk or "wrk", "-v"], capture_output=True, text=True, check=False
            ).stdout.split("[")[0]
            return f"{version.strip()} ({self.threads} thread(s)), Lua script"
        return (
            "Python aiohttp load generator in its own process"
            + (" (wrk not found on PATH)" if self.wrk is None else "")
            + ". "
            "It is CPU-hungry and competes with the upstream for its core, so direct "
            "throughput and both latencies are pessimistic"
        )

    def run(
        self,
        url: str,
        headers: dict[str, str],
        connections: int,
        duration: int,
        *,
        keyed: bool = False,
    ) -> dict[str, Any]:
        """`keyed`: every request with an Idempotency-Key of its own."""
        if self.kind == "wrk":
            script = self.tmp / f"load-{urlsplit(url).port}-{int(keyed)}.lua"
            lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
            script.write_text(
                WRK_SCRIPT.format(body=BODY, headers=lines, keyed=WRK_KEYED if keyed else "")
            )
            threads = max(1, min(self.threads, connections))
            argv = [
                self.wrk or "wrk",
                f"-t{threads}",
                f"-c{connections}",
                f"-d{duration}s",
                "--timeout",
                "5s",
                "--latency",
                "-s",
                str(script),
                url,
            ]
        else:
            spec = {
                "url": url,
                "headers": headers,
                "body": BODY,
                "connections": connections,
                "duration": duration,
                "keyed": keyed,
            }
            argv = [sys.executable, str(Path(__file__).resolve()), "_loadgen", json.dumps(spec)]
        proc = self.procs.start(argv, self.cpus, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=duration + 60)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"the load generator ran over {duration + 60}s") from None
        finally:
            self.procs.stop(proc)
        for line in out.decode().splitlines():
            if line.startswith("BENCH_RESULT "):
                raw = json.loads(line.removeprefix("BENCH_RESULT "))
                break
        else:
            raise RuntimeError(
                f"load generator failed (status {proc.returncode}):\n{out.decode()}{err.decode()}"
            )
        if self.kind == "wrk":
            raw["duration_s"] = raw.pop("duration_us") / 1e6
            raw["errors"] = {
                k: int(raw.pop(k)) for k in ("connect", "read", "write", "status", "timeout")
            }
        raw["requests"] = int(raw["requests"])
        raw["rps"] = raw["requests"] / raw["duration_s"] if raw["duration_s"] else 0.0
        return dict(raw)


# --------------------------------------------------------------------------- typed phase

# A realistic document: ten collections of a ticketing API with five operations each
# (list, create, get, update, delete), typed query parameters, shared schemas and
# parameters by $ref.
TYPED_RESOURCES = (
    "tickets",
    "comments",
    "users",
    "teams",
    "projects",
    "labels",
    "milestones",
    "attachments",
    "webhooks",
    "audits",
)


def typed_document() -> dict[str, Any]:
    item = {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}}
    schemas: dict[str, Any] = {
        "Item": item,
        "NewTicket": {
            "type": "object",
            "required": ["title"],
            "additionalProperties": False,
            "properties": {
                "title": {"type": "string", "minLength": 1, "maxLength": 200},
                "priority": {"type": "integer", "minimum": 1, "maximum": 5},
                "tags": {"type": "array", "maxItems": 10, "items": {"type": "string"}},
                "assignee": {"type": ["string", "null"]},
            },
        },
    }
    parameters = {
        "id": {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}},
        "limit": {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": 100},
        },
        "status": {
            "name": "status",
            "in": "query",
            "schema": {"type": "array", "items": {"enum": ["open", "pending", "closed"]}},
        },
    }
    ok = {
        "description": "ok",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Item"}}},
    }
    paths: dict[str, Any] = {}
    for collection in TYPED_RESOURCES:
        body = "NewTicket" if collection == "tickets" else "Item"
        new = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
        }
        by_id = [{"$ref": "#/components/parameters/id"}]
        paths[f"/{collection}"] = {
            "get": {
                "operationId": f"list_{collection}",
                "parameters": [
                    {"$ref": "#/components/parameters/limit"},
                    {"$ref": "#/components/parameters/status"},
                ],
                "responses": {"200": ok},
            },
            "post": {
                "operationId": f"create_{collection}",
                "requestBody": new,
                "responses": {"201": ok},
            },
        }
        paths[f"/{collection}/{{id}}"] = {
            "parameters": by_id,
            "get": {"operationId": f"get_{collection}", "responses": {"200": ok}},
            "patch": {
                "operationId": f"update_{collection}",
                "requestBody": new,
                "responses": {"200": ok},
            },
            "delete": {
                "operationId": f"delete_{collection}",
                "responses": {"204": {"description": "gone"}},
            },
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "tickets", "version": "1"},
        "paths": paths,
        "components": {"schemas": schemas, "parameters": parameters},
    }


def typed_phase(rounds: int = 5, calls: int = 20_000) -> dict[str, Any]:
    """µs per call of resolving and checking three calls with a 50-operation document
    (best of `rounds` rounds of `calls` calls each), in this process."""
    import yaml

    from gateway.openapi.operations import Spec

    started = time.perf_counter()
    spec = Spec("bench", yaml.safe_dump(typed_document()), "http://127.0.0.1")
    compile_ms = (time.perf_counter() - started) * 1000
    body = json.loads(BODY)
    json_headers = {"content-type": "application/json"}
    cases = {
        f"POST {CALL_PATH} (the call under test, small JSON body)": (
            "POST",
            CALL_PATH,
            {},
            json_headers,
            body,
            True,
        ),
        "GET /tickets?limit=20&status=open&status=pending": (
            "GET",
            "/tickets",
            {"limit": ["20"], "status": ["open", "pending"]},
            {},
            None,
            False,
        ),
        "PATCH /audits/42 (last of the document's paths)": (
            "PATCH",
            "/audits/42",
            {},
            json_headers,
            {"id": 42},
            True,
        ),
    }
    results = {}
    for name, args in cases.items():
        resolved = spec.resolve(*args)
        if resolved.operation is None or resolved.problems:
            raise RuntimeError(f"typed phase: {name} does not resolve cleanly: {resolved.problems}")
        best = float("inf")
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(calls):
                spec.resolve(*args)
            best = min(best, (time.perf_counter() - t0) / calls * 1e6)
        results[name] = {"operation": resolved.operation.id, "us_per_call": best}
    under_test = next(iter(results.values()))["us_per_call"]
    return {
        "operations": len(spec.operations),
        "compile_ms": compile_ms,
        "calls": results,
        "target": {
            "target": f"<= {TARGET_TYPED_US} µs",
            "value": under_test,
            "met": under_test <= TARGET_TYPED_US,
        },
    }


def typed_report(typed: dict[str, Any]) -> list[str]:
    lines = [
        f"typed tool (tools[].openapi, validate): a document of {typed['operations']} "
        f"operations, compiled in {typed['compile_ms']:.0f} ms; operation lookup + request "
        "validation per call, in-process, best of 5 rounds:",
    ]
    for name, result in typed["calls"].items():
        lines.append(f"  {name:<58}{result['us_per_call']:>7.1f} µs  ({result['operation']})")
    t = typed["target"]
    lines.append(
        f"  target for the call under test: {t['target']}: {t['value']:.1f} µs "
        f"({'met' if t['met'] else 'MISSED'})"
    )
    return lines


# --------------------------------------------------------------------------- the benchmark


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def write_config(
    tmp: Path,
    name: str,
    upstream_port: int,
    listen_port: int,
    admin_port: int,
    policies: Path = POLICIES,
) -> Path:
    import yaml

    tree = {
        "listen": {"host": "127.0.0.1", "port": listen_port},
        "admin": {"host": "127.0.0.1", "port": admin_port},
        "storage": {"url": f"sqlite:///{tmp}/{name}-store.db"},  # one process, one file
        "audit": {"url": f"sqlite:///{tmp}/{name}-audit.db", **GATEWAYS[name]},
        "policy": {"engine": "embedded", "path": str(policies)},
        # The load repeats one identical call ~10^5 times: the loop breaker and session
        # budget (when enforced) would rightly stop it, so they are off for the benchmark.
        "limits": {"loop": None, "session_budget": None},
        "agents": [{"id": AGENT_ID, "token_sha256": sha256_hex(AGENT_TOKEN), "roles": [ROLE]}],
        "tools": [
            {
                "name": TOOL,
                "upstream": f"http://127.0.0.1:{upstream_port}",
                "credentials": {"header": "Authorization", "value": f"Bearer {TOOL_SECRET}"},
                "timeout_s": 10,
            }
        ],
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def callgate_argv() -> list[str]:
    script = Path(sys.executable).parent / "callgate"
    if script.exists():
        return [str(script)]
    found = shutil.which("callgate")
    return [found] if found else [sys.executable, "-m", "gateway"]


def check_call(url: str, headers: dict[str, str], what: str) -> None:
    """One call, before any load: a 403 or 502 at 50,000 req/s would measure nothing."""
    status, response_headers, body = http(
        "POST", url, BODY.encode(), {**headers, "Content-Type": "application/json"}
    )
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if status != 201 or not isinstance(document, dict) or document.get("id") != REPLY["id"]:
        raise RuntimeError(f"{what}: expected 201 from the upstream, got {status}: {body[:300]!r}")
    if what in GATEWAYS and "X-Request-Id" not in response_headers:
        raise RuntimeError(f"{what}: the response carries no X-Request-Id")


def plan_cpus(pin: bool) -> tuple[set[int] | None, set[int] | None, str]:
    cpus = sorted(os.sched_getaffinity(0))
    if not pin:
        return None, None, "none (--no-pin)"
    if len(cpus) < 2:
        return None, None, f"none (only CPU {cpus} available)"
    gateway, rest = {cpus[0]}, set(cpus[1:])
    text = (
        f"gateway (and the floor proxy) -> CPU {cpus[0]}; upstream + load generator + "
        "this script -> "
        f"CPU {','.join(map(str, sorted(rest)))}"
    )
    return gateway, rest, text


def start_gateway(
    procs: Procs, config: Path, log_path: Path, log_level: str, cpus: set[int] | None
) -> subprocess.Popen[bytes]:
    """`callgate serve` with this config, its output to `log_path`."""
    env = {**os.environ, "RUST_LIB_BACKTRACE": "0"}
    with log_path.open("wb") as out:
        return procs.start(
            [*callgate_argv(), "serve", "--config", str(config), "--log-level", log_level],
            cpus,
            stdout=out,
            stderr=out,
            env=env,
        )


def gateway_figures(delta: dict[str, float], cpu_s: float, busy_s: float) -> dict[str, Any]:
    """What the gateway's /metrics (`delta`, across a phase) and CPU say of a phase."""
    served = int(delta["requests"])
    flushes = delta["audit_flushes"]
    return {
        "gateway_served": served,
        "gateway_outcomes": {
            k.removeprefix("outcome:"): int(v)
            for k, v in delta.items()
            if k.startswith("outcome:") and v
        },
        "gateway_core_utilisation": cpu_s / busy_s,
        "gateway_mean_in_gateway_us": 1e6 * delta["gateway_s"] / served if served else None,
        "gateway_mean_upstream_us": 1e6 * delta["upstream_s"] / served if served else None,
        "gateway_mean_policy_us": (
            1e6 * delta["policy_s"] / delta["policy_n"] if delta["policy_n"] else None
        ),
        "audit_records_per_commit": delta["audit_records"] / flushes if flushes else None,
        "audit_mean_commit_us": 1e6 * delta["audit_flush_s"] / flushes if flushes else None,
    }


def run_benchmark(args: argparse.Namespace, procs: Procs, tmp: Path) -> dict[str, Any]:
    gateway_cpus, load_cpus, pin_text = plan_cpus(not args.no_pin)
    if load_cpus:
        os.sched_setaffinity(0, load_cpus)
    wrk = shutil.which("wrk")
    kind = args.loadgen if args.loadgen != "auto" else ("wrk" if wrk else "python")
    if kind == "wrk" and not wrk:
        raise RuntimeError("--loadgen wrk: wrk is not on PATH (apt-get install wrk)")
    loadgen = LoadGen(
        kind, load_cpus, procs, tmp, wrk=wrk, threads=len(load_cpus or os.sched_getaffinity(0))
    )

    logs = args.logs or tmp
    logs.mkdir(parents=True, exist_ok=True)
    upstream_port, floor_port, *gateway_ports = free_ports(2 + 2 * len(GATEWAYS))
    upstream_log = logs / "upstream.log"
    with upstream_log.open("wb") as err:
        upstream = procs.start(
            [sys.executable, str(Path(__file__).resolve()), "_upstream", str(upstream_port)],
            load_cpus,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    upstream_info = read_ready_line(upstream, "the upstream")

    floor_log = logs / "floor.log"
    with floor_log.open("wb") as err:
        floor = procs.start(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "_floor",
                str(floor_port),
                str(upstream_port),
            ],
            gateway_cpus,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    floor_info = read_ready_line(floor, "the floor proxy")

    policies = POLICIES
    if args.policy == "one-rule":
        policies = tmp / "one-rule"
        policies.mkdir()
        (policies / "gateway.rego").write_text(ONE_RULE_REGO)
    # name -> (process, agent URL, admin URL, log file)
    gateways: dict[str, tuple[subprocess.Popen[bytes], str, str, Path]] = {}
    for i, name in enumerate(GATEWAYS):
        listen_port, admin_port = gateway_ports[2 * i : 2 * i + 2]
        config_path = write_config(tmp, name, upstream_port, listen_port, admin_port, policies)
        gateway_log = logs / f"{name}.log"
        proc = start_gateway(procs, config_path, gateway_log, args.log_level, gateway_cpus)
        gateway_url = f"http://127.0.0.1:{listen_port}/tools/{TOOL}{CALL_PATH}"
        gateways[name] = (proc, gateway_url, f"http://127.0.0.1:{admin_port}", gateway_log)
    for proc, _url, admin, gateway_log in gateways.values():
        readyz = wait_ready(proc, f"{admin}/readyz", gateway_log)

    direct_url = f"http://127.0.0.1:{upstream_port}{CALL_PATH}"
    floor_url = f"http://127.0.0.1:{floor_port}/tools/{TOOL}{CALL_PATH}"
    # Each side gets the credential it would hold: the tool's secret, or the agent token.
    direct_headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOOL_SECRET}"}
    gateway_headers = {"Content-Type": "application/json", "Authorization": f"Bearer {AGENT_TOKEN}"}
    check_call(direct_url, direct_headers, "direct")
    for name, (_proc, url, _admin, _log) in gateways.items():
        check_call(url, gateway_headers, name)
    # The floor gets the agent's request unchanged; it sends the tool's credential on.
    check_call(floor_url, gateway_headers, "floor")

    phases: list[dict[str, Any]] = []
    targets_at = {
        "direct": (direct_url, direct_headers),
        "floor": (floor_url, gateway_headers),
        **{name: (url, gateway_headers) for name, (_p, url, _a, _l) in gateways.items()},
        # The gateway without audit again, every call with an Idempotency-Key of its own:
        # what the store (SQLite) adds to a call.
        KEYED: (gateways["gateway"][1], gateway_headers),
    }
    plan = [(target, n) for n in (args.connections, 1) for target in targets_at]
    for target, connections in plan:
        url, headers = targets_at[target]
        keyed = target == KEYED
        # The gateway measured in this phase, or (direct, floor) the one without audit idling.
        measured = target if target in gateways else "gateway"
        gateway, _url, admin, gateway_log = gateways[measured]
        log(f"{target:7} c={connections}: {args.warmup}s warm-up, {args.duration}s measured")
        if args.warmup > 0:
            loadgen.run(url, headers, connections, args.warmup, keyed=keyed)
        metrics_before = scrape(f"{admin}/metrics")
        gw_cpu0, up_cpu0 = cpu_seconds(gateway.pid), cpu_seconds(upstream.pid)
        fl_cpu0 = cpu_seconds(floor.pid)
        kids0 = children_cpu_seconds()
        wall0 = time.monotonic()
        result = loadgen.run(url, headers, connections, args.duration, keyed=keyed)
        wall = time.monotonic() - wall0
        for name, (proc, _url, _admin, log_path) in gateways.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with status {proc.returncode} during the "
                    f"{target} c={connections} phase:\n{tail(log_path)}"
                )
        if floor.poll() is not None:
            raise RuntimeError(
                f"the floor proxy exited with status {floor.returncode} during the "
                f"{target} c={connections} phase:\n{tail(floor_log)}"
            )
        busy = result["duration_s"] or wall
        gw_cpu = cpu_seconds(gateway.pid) - gw_cpu0
        up_cpu = cpu_seconds(upstream.pid) - up_cpu0
        fl_cpu = cpu_seconds(floor.pid) - fl_cpu0
        # wrk starts in no time; the Python generator reports its CPU without its imports.
        loadgen_cpu = result.get("cpu_s", children_cpu_seconds() - kids0)
        metrics_after = scrape(f"{admin}/metrics")
        delta = {k: v - metrics_before.get(k, 0.0) for k, v in metrics_after.items()}
        phase = {
            "target": target,
            "connections": connections,
            **{k: result[k] for k in ("requests", "duration_s", "rps")},
            **{k: result[k] for k in ("p50_us", "p90_us", "p99_us", "mean_us", "max_us")},
            "errors": result["errors"],
            "wall_s": wall,
            "upstream_cpu_s": up_cpu,
            "upstream_cpu_us_per_request": 1e6 * up_cpu / max(1, result["requests"]),
            "loadgen_cpu_s": loadgen_cpu,
            # Over the load generator's own measured time: its start-up is not load.
            "load_core_utilisation": (up_cpu + loadgen_cpu) / busy / len(load_cpus or {0}),
        }
        if target in gateways or keyed:
            served = int(delta["requests"])
            phase.update(
                gateway_cpu_s=gw_cpu,
                gateway_cpu_us_per_request=1e6 * gw_cpu / served if served else None,
                **gateway_figures(delta, gw_cpu, busy),
            )
        else:
            phase["gateway_cpu_s_while_idle"] = gw_cpu
        if target == "floor":
            # No /metrics here: the requests the load generator completed.
            phase.update(
                floor_cpu_s=fl_cpu,
                floor_cpu_us_per_request=(
                    1e6 * fl_cpu / result["requests"] if result["requests"] else None
                ),
                floor_core_utilisation=fl_cpu / busy,
            )
        else:
            phase["floor_cpu_s_while_idle"] = fl_cpu
        phases.append(phase)

    def find(target: str, connections: int) -> dict[str, Any]:
        return next(p for p in phases if p["target"] == target and p["connections"] == connections)

    d_n, g_n = find("direct", args.connections), find("gateway", args.connections)
    d_1, g_1 = find("direct", 1), find("gateway", 1)
    f_n, f_1 = find("floor", args.connections), find("floor", 1)
    cpu_per_req = g_n.get("gateway_cpu_us_per_request")

    def split(gateway_us: float | None, floor_us: float | None) -> dict[str, float | None]:
        own = None if gateway_us is None or floor_us is None else gateway_us - floor_us
        return {
            "gateway": gateway_us,
            "aiohttp_proxy_floor": floor_us,
            "callgate_own_work": own,
            "callgate_own_work_share": own / gateway_us if own is not None and gateway_us else None,
        }

    summary = {
        "throughput_ratio_gateway_over_direct": g_n["rps"] / d_n["rps"] if d_n["rps"] else None,
        "added_p50_us_1_connection": g_1["p50_us"] - d_1["p50_us"],
        f"added_p50_us_{args.connections}_connections": g_n["p50_us"] - d_n["p50_us"],
        "gateway_cpu_us_per_request": cpu_per_req,
        "gateway_cpu_us_per_request_1_connection": g_1.get("gateway_cpu_us_per_request"),
        "gateway_one_core_capacity_rps_estimate": 1e6 / cpu_per_req if cpu_per_req else None,
        "throughput_ratio_gateway_over_floor": g_n["rps"] / f_n["rps"] if f_n["rps"] else None,
        "floor_rps": f_n["rps"],
        "floor_p50_us": f_n["p50_us"],
        "floor_p99_us": f_n["p99_us"],
        "floor_rps_1_connection": f_1["rps"],
        "floor_p50_us_1_connection": f_1["p50_us"],
        "floor_p99_us_1_connection": f_1["p99_us"],
        "floor_cpu_us_per_request": f_n["floor_cpu_us_per_request"],
        "floor_cpu_us_per_request_1_connection": f_1["floor_cpu_us_per_request"],
        "added_p50_us_over_floor_1_connection": g_1["p50_us"] - f_1["p50_us"],
        f"added_p50_us_over_floor_{args.connections}_connections": g_n["p50_us"] - f_n["p50_us"],
        # Gateway CPU/request = the aiohttp proxy floor + callgate's own work (the rest).
        "gateway_cpu_us_per_request_split": split(cpu_per_req, f_n["floor_cpu_us_per_request"]),
        "gateway_cpu_us_per_request_split_1_connection": split(
            g_1.get("gateway_cpu_us_per_request"), f_1["floor_cpu_us_per_request"]
        ),
    }
    for name in AUDITED:
        a_n, a_1 = find(name, args.connections), find(name, 1)
        summary[f"{name}_rps_cost"] = 1 - a_n["rps"] / g_n["rps"] if g_n["rps"] else None
        summary[f"{name}_added_p50_us_1_connection"] = a_1["p50_us"] - g_1["p50_us"]
        summary[f"{name}_cpu_us_per_request_added"] = (
            a_n["gateway_cpu_us_per_request"] - cpu_per_req
            if a_n.get("gateway_cpu_us_per_request") and cpu_per_req
            else None
        )
        summary[f"{name}_records_per_commit"] = a_n["audit_records_per_commit"]
        summary[f"{name}_records_per_commit_1_connection"] = a_1["audit_records_per_commit"]
        summary[f"{name}_mean_commit_us_1_connection"] = a_1["audit_mean_commit_us"]
    k_n, k_1 = find(KEYED, args.connections), find(KEYED, 1)
    summary["keyed_rps_cost"] = 1 - k_n["rps"] / g_n["rps"] if g_n["rps"] else None
    summary["keyed_added_p50_us_1_connection"] = k_1["p50_us"] - g_1["p50_us"]
    summary["keyed_cpu_us_per_request_added"] = (
        k_n["gateway_cpu_us_per_request"] - cpu_per_req
        if k_n.get("gateway_cpu_us_per_request") and cpu_per_req
        else None
    )
    a_n, a_1 = find("audit-normal", args.connections), find("audit-normal", 1)
    full_n = find("audit-full", args.connections)
    ratio = a_n["rps"] / f_n["rps"] if f_n["rps"] else 0.0
    added = a_1["p50_us"] - f_1["p50_us"]
    p99_1 = a_1["p99_us"] / f_1["p99_us"] if f_1["p99_us"] else float("inf")
    p99_n = a_n["p99_us"] / f_n["p99_us"] if f_n["p99_us"] else float("inf")
    full_below = 1 - full_n["rps"] / a_n["rps"] if a_n["rps"] else 1.0
    targets = {
        "audit_normal_rps_over_floor": {
            "target": f">= {TARGET_FLOOR_RATIO}x",
            "measured": ratio,
            "met": ratio >= TARGET_FLOOR_RATIO,
        },
        "audit_normal_added_p50_us_over_floor_1_connection": {
            "target": f"<= +{TARGET_ADDED_P50_OVER_FLOOR_US} µs",
            "measured": added,
            "met": added <= TARGET_ADDED_P50_OVER_FLOOR_US,
        },
        "audit_normal_p99_over_floor_1_connection": {
            "target": f"<= {TARGET_P99_OVER_FLOOR}x",
            "measured": p99_1,
            "met": p99_1 <= TARGET_P99_OVER_FLOOR,
        },
        f"audit_normal_p99_over_floor_{args.connections}_connections": {
            "target": f"<= {TARGET_P99_OVER_FLOOR}x",
            "measured": p99_n,
            "met": p99_n <= TARGET_P99_OVER_FLOOR,
        },
        "audit_full_rps_below_normal": {
            "target": f"<= {TARGET_FULL_BELOW_NORMAL:.0%}",
            "measured": full_below,
            "met": full_below <= TARGET_FULL_BELOW_NORMAL,
        },
    }
    try:
        import uvloop  # noqa: F401

        bench_uvloop = True
    except ImportError:
        bench_uvloop = False
    return {
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "request": f"POST {CALL_PATH}, {len(BODY)}-byte JSON body",
            "gateway_log_level": args.log_level,
            "policy": str(policies) if args.policy == "default" else "one rule (allow)",
            "policy_version": readyz.get("policy_version"),
        },
        "machine": {
            "cpus": sorted(os.sched_getaffinity(0) | (gateway_cpus or set())),
            "loadavg_before": Path("/proc/loadavg").read_text().split()[:3],
            "python": platform.python_version(),
        },
        "load_generator": {"kind": kind, "description": loadgen.describe()},
        "pinning": pin_text,
        "uvloop": {
            "gateway": all(uvloop_loaded(proc.pid) for proc, *_ in gateways.values()),
            "upstream": "uvloop" in upstream_info.get("loop", ""),
            "upstream_loop": upstream_info.get("loop"),
            "floor": "uvloop" in floor_info.get("loop", ""),
            "floor_loop": floor_info.get("loop"),
            "installed": bench_uvloop,
        },
        "floor": {
            "url": f"POST /tools/{TOOL}{CALL_PATH}",
            "description": "bare aiohttp proxy on the gateway's CPU: one pooled ClientSession "
            "(TCPConnector(limit=1024), auto_decompress=False), body read and sent with the "
            "tool credential, answer streamed back with web.StreamResponse; nothing else",
        },
        "phases": phases,
        "gateway_errors": [
            f"{name}: {error}"
            for name, (_proc, _url, _admin, log_path) in gateways.items()
            for error in gateway_errors(log_path)
        ],
        "summary": summary,
        "targets": targets,
    }


# --------------------------------------------------------------------------- report


def fmt_us(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def report(r: dict[str, Any]) -> str:
    s, summary, t = r["settings"], r["summary"], r["targets"]
    n = s["connections"]
    lines = [
        f"callgate proxy overhead: {s['request']}, {s['duration_s']} s per phase "
        f"(after {s['warmup_s']} s warm-up), gateway log level {s['gateway_log_level']}",
        f"policy: {s['policy']} (version {str(s['policy_version'])[:12]}), role {ROLE}, "
        f"tool {TOOL}",
        f"machine: CPUs {r['machine']['cpus']}, load average before "
        f"{' '.join(r['machine']['loadavg_before'])}, Python {r['machine']['python']}",
        f"load generator: {r['load_generator']['description']}",
        f"pinning: {r['pinning']}",
        f"uvloop: gateway {'yes' if r['uvloop']['gateway'] else 'NO'} "
        f"(uvloop mapped in the gateway process), upstream "
        f"{'yes' if r['uvloop']['upstream'] else 'NO'} ({r['uvloop']['upstream_loop']}), "
        f"floor {'yes' if r['uvloop']['floor'] else 'NO'} ({r['uvloop']['floor_loop']})",
        "",
        f"{'phase':<20}{'req/s':>10}{'p50 µs':>10}{'p90 µs':>10}{'p99 µs':>10}"
        f"{'requests':>11}  errors",
    ]
    for p in r["phases"]:
        errors = {k: v for k, v in p["errors"].items() if v}
        lines.append(
            f"{p['target'] + ' c=' + str(p['connections']):<20}{p['rps']:>10,.0f}"
            f"{fmt_us(p['p50_us']):>10}{fmt_us(p['p90_us']):>10}{fmt_us(p['p99_us']):>10}"
            f"{p['requests']:>11,}  {errors or 'none'}"
        )
    g_n = next(p for p in r["phases"] if p["target"] == "gateway" and p["connections"] == n)
    g_1 = next(p for p in r["phases"] if p["target"] == "gateway" and p["connections"] == 1)
    d_n = next(p for p in r["phases"] if p["target"] == "direct" and p["connections"] == n)
    f_n = next(p for p in r["phases"] if p["target"] == "floor" and p["connections"] == n)
    ratio = summary["throughput_ratio_gateway_over_direct"]
    floor_ratio = summary["throughput_ratio_gateway_over_floor"]

    def split_text(split: dict[str, float | None]) -> str:
        share = split["callgate_own_work_share"]
        return (
            f"{fmt_us(split['gateway'])} µs = aiohttp proxy floor "
            f"{fmt_us(split['aiohttp_proxy_floor'])} µs + callgate's own work "
            f"{fmt_us(split['callgate_own_work'])} µs"
            + ("" if share is None else f" ({share:.0%})")
        )

    lines += [
        "",
        f"gateway/direct throughput at {n} connections: "
        + ("n/a" if ratio is None else f"{ratio:.2f}"),
        f"added p50 latency: {summary['added_p50_us_1_connection']:+,.0f} µs at 1 connection, "
        f"{summary[f'added_p50_us_{n}_connections']:+,.0f} µs at {n} connections",
        f"gateway CPU per request: {fmt_us(summary['gateway_cpu_us_per_request'])} µs at {n} "
        f"connections ({g_n['gateway_served']:,} served, {g_n['gateway_cpu_s']:.2f} s CPU), "
        f"{fmt_us(summary['gateway_cpu_us_per_request_1_connection'])} µs at 1 connection",
        f"  -> CPU-bound capacity of one gateway core: "
        f"~{fmt_us(summary['gateway_one_core_capacity_rps_estimate'])} req/s",
        f"  upstream CPU per request (same aiohttp stack, trivial handler): "
        f"{fmt_us(d_n['upstream_cpu_us_per_request'])} µs direct at {n} connections",
        f"floor (bare aiohttp proxy, same client stack, gateway's CPU): "
        f"{summary['floor_rps']:,.0f} req/s, p50 {fmt_us(summary['floor_p50_us'])} µs, "
        f"p99 {fmt_us(summary['floor_p99_us'])} µs at {n} connections; "
        f"{summary['floor_rps_1_connection']:,.0f} req/s, "
        f"p50 {fmt_us(summary['floor_p50_us_1_connection'])} µs, "
        f"p99 {fmt_us(summary['floor_p99_us_1_connection'])} µs at 1 connection",
        f"gateway/floor throughput at {n} connections: "
        + ("n/a" if floor_ratio is None else f"{floor_ratio:.2f}")
        + f"; gateway p50 over floor: {summary['added_p50_us_over_floor_1_connection']:+,.0f} µs "
        f"at 1 connection, {summary[f'added_p50_us_over_floor_{n}_connections']:+,.0f} µs "
        f"at {n} connections",
        f"floor CPU per request: {fmt_us(summary['floor_cpu_us_per_request'])} µs at {n} "
        f"connections ({f_n['requests']:,} completed, {f_n['floor_cpu_s']:.2f} s CPU, floor "
        f"core {f_n['floor_core_utilisation']:.0%}), "
        f"{fmt_us(summary['floor_cpu_us_per_request_1_connection'])} µs at 1 connection",
        f"gateway CPU per request split at {n} connections: "
        + split_text(summary["gateway_cpu_us_per_request_split"]),
        "  at 1 connection: "
        + split_text(summary["gateway_cpu_us_per_request_split_1_connection"]),
        f"core utilisation at {n} connections through the gateway: gateway core "
        f"{g_n['gateway_core_utilisation']:.0%}, upstream + load generator core(s) "
        f"{g_n['load_core_utilisation']:.0%} (direct phase: {d_n['load_core_utilisation']:.0%})",
        f"gateway's own metrics at {n} connections (means): in gateway "
        f"{fmt_us(g_n['gateway_mean_in_gateway_us'])} µs, of which the upstream call "
        f"{fmt_us(g_n['gateway_mean_upstream_us'])} µs (this includes waiting for the "
        "gateway's own busy event loop); policy evaluation "
        f"{g_n['gateway_mean_policy_us'] or float('nan'):.1f} µs; 1 connection: in gateway "
        f"{fmt_us(g_1['gateway_mean_in_gateway_us'])} µs, upstream "
        f"{fmt_us(g_1['gateway_mean_upstream_us'])} µs",
        "",
        "targets (informational, not asserted; the full path is audit-normal):",
    ]
    for name, target in t.items():
        measured = target["measured"]
        shown = (
            f"{measured:+,.0f} µs"
            if "µs" in target["target"]
            else f"{measured:.1%}"
            if "%" in target["target"]
            else f"{measured:.2f}x"
        )
        lines.append(
            f"  {name}: target {target['target']}, measured {shown} "
            f"-> {'met' if target['met'] else 'NOT met'}"
        )
    for name in AUDITED:
        per_commit = summary[f"{name}_records_per_commit"]
        lines += [
            f"  {name} vs gateway without audit: req/s cost "
            f"{summary[f'{name}_rps_cost'] or float('nan'):.1%}, added p50 at 1 conn. "
            f"{summary[f'{name}_added_p50_us_1_connection']:+,.0f} µs, audit CPU per request "
            f"+{fmt_us(summary[f'{name}_cpu_us_per_request_added'])} µs;"
            f" records per commit {per_commit or float('nan'):.1f} at {n} connections, "
            f"{summary[f'{name}_records_per_commit_1_connection'] or float('nan'):.1f} at 1, "
            f"where a commit takes {fmt_us(summary[f'{name}_mean_commit_us_1_connection'])} µs "
            "on average (SQLite, in its thread, fsync included with FULL)",
        ]
    lines.append(
        f"  keyed (an Idempotency-Key on every call, kept in the SQLite store) vs gateway: "
        f"req/s cost {summary['keyed_rps_cost'] or float('nan'):.1%}, added p50 at 1 conn. "
        f"{summary['keyed_added_p50_us_1_connection']:+,.0f} µs, CPU per request "
        f"+{fmt_us(summary['keyed_cpu_us_per_request_added'])} µs"
    )
    notes = []
    if g_n["gateway_core_utilisation"] < 0.85:
        notes.append(
            f"the gateway core was only {g_n['gateway_core_utilisation']:.0%} busy at {n} "
            "connections: the upstream/load-generator side may have been the limit"
        )
    if f_n["floor_core_utilisation"] < 0.85:
        notes.append(
            f"the floor's core was only {f_n['floor_core_utilisation']:.0%} busy at {n} "
            "connections: the upstream/load-generator side may have been the limit"
        )
    if any(any(p["errors"].values()) for p in r["phases"]):
        notes.append("the load generator saw failed calls: see the errors column")
    for p in r["phases"]:
        if p["target"] not in GATEWAYS:
            continue
        others = {k: v for k, v in p["gateway_outcomes"].items() if k != "forwarded"}
        if others:
            notes.append(
                f"{p['target']} c={p['connections']}: outcomes other than forwarded: {others}"
                + (
                    " (stream_broken up to the connection count is the load generator "
                    "hanging up on calls in flight when a phase ends)"
                    if set(others) == {"stream_broken"}
                    else ""
                )
            )
    if d_n["load_core_utilisation"] > 0.9:
        notes.append(
            "direct: the upstream shares its core with the load generator, so the direct "
            "figure is a lower bound of the upstream's own capacity"
        )
    notes += [f"gateway log error: {e}" for e in r["gateway_errors"]]
    if any("ClientConnectionResetError" in e for e in r["gateway_errors"]):
        notes.append(
            "'Cannot write to closing transport' is the load generator hanging up on calls "
            "in flight when a phase ends: the gateway counts such a call as internal_error "
            "and logs a traceback (it fails in forward's response.prepare, before streaming)"
        )
    if notes:
        lines += ["", "notes:", *(f"  - {note}" for note in notes)]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Load an upstream directly, through a bare aiohttp proxy and through "
        "callgate; print the overhead."
    )
    parser.add_argument(
        "--duration", type=positive_int, default=10, help="seconds per measured phase (10)"
    )
    parser.add_argument(
        "--connections", type=positive_int, default=50, help="connections for the load (50)"
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument(
        "--warmup", type=int, default=1, help="seconds of warm-up before each phase (1)"
    )
    parser.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator: wrk when on PATH (auto), or the Python fallback",
    )
    parser.add_argument(
        "--log-level", default="INFO", help="gateway log level (INFO: one access line per call)"
    )
    parser.add_argument(
        "--logs",
        type=Path,
        default=None,
        help="keep gateway.log, upstream.log and floor.log in this folder "
        "(default: a temporary one)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--typed-only",
        action="store_true",
        help="run only the typed phase (what tools[].openapi adds per call) and stop",
    )
    parser.add_argument(
        "--policy",
        choices=("default", "one-rule"),
        default="default",
        help="the repo's default policies, or one rule allowing every call",
    )
    return parser.parse_args(argv)


T = TypeVar("T")


def run_in_a_temporary_folder(prefix: str, run: Callable[[Procs, Path], T]) -> T | int:
    """`run` in a folder of its own; on failure or Ctrl-C the exit status to return
    instead (the reason logged). Every process it started is stopped either way."""
    procs = Procs()
    with sigterm_as_exit(), tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        try:
            return run(procs, Path(tmp))
        except (RuntimeError, OSError) as exc:
            log(f"benchmark failed: {exc}")
            return 1
        except KeyboardInterrupt:
            log("interrupted; stopped every process this run started")
            return 130
        finally:
            procs.stop_all()


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """SIGTERM/SIGHUP unwind through `finally` blocks like Ctrl-C does."""

    def handler(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def main(argv: list[str]) -> int:
    if argv[:1] == ["_upstream"]:
        upstream_main(int(argv[1]))
        return 0
    if argv[:1] == ["_floor"]:
        floor_main(int(argv[1]), int(argv[2]))
        return 0
    if argv[:1] == ["_loadgen"]:
        loadgen_main(argv[1])
        return 0
    args = parse_args(argv)
    log("typed: operation lookup + request validation, in-process")
    typed = typed_phase()
    if args.typed_only:
        print(
            json.dumps({"typed": typed}, indent=2) if args.json else "\n".join(typed_report(typed))
        )
        return 0
    result = run_in_a_temporary_folder(
        "callgate-bench-", lambda procs, tmp: run_benchmark(args, procs, tmp)
    )
    if isinstance(result, int):
        return result
    result["typed"] = typed
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(report(result) + "\n\n" + "\n".join(typed_report(typed)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
