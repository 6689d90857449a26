#!/usr/bin/env python3
"""MCP overhead of callgate: `tools/call` straight at an official-SDK MCP server and
through the gateway, with JSON and with SSE answers, in one run.

    python bench/mcp_overhead.py [--duration 10] [--connections 50] [--json]
        [--profile FILE]

Starts, each in its own process (and process group) on 127.0.0.1 ports chosen free:

- two MCP servers made with the official `mcp` SDK (`MCPServer`, Streamable HTTP,
  `stateless_http=True`, under uvicorn), one tool `add(a, b)`: one answers every POST with
  a JSON document (`json_response=True`), the other with an SSE stream holding the one
  response event (`json_response=False`). Stateless servers are born initialized: each
  POST is a complete `tools/call`, no `initialize` or session first;
- the gateway: `callgate serve` with two MCP tools (`mcp-json`, `mcp-sse`, one per
  server), the audit log on (`synchronous: NORMAL`, as bench/proxy_overhead.py's
  `audit-normal`) and the repo's default policy with a grant in its data allowing role
  `support` the MCP tool `add` on both: the real default policy is evaluated.

Then, after one checked call on every path, it drives the same JSON-RPC POST
(`tools/call` of `add` with two small numbers, `Accept: application/json,
text/event-stream`, `MCP-Protocol-Version: 2025-11-25`) with bench/proxy_overhead.py's
load generator (wrk when on PATH, else its Python one): for each answer framing, direct at
N connections and through the gateway at N, then both at 1 connection, each after a short
warm-up. It prints requests/s and p50/p99 per phase, the through/direct throughput ratio,
the p50 the gateway adds, and the gateway's CPU time per tools/call (utime+stime of the
gateway process across the phase, over the calls its /metrics counted). Pinning as in
bench/proxy_overhead.py: the gateway on one CPU, the servers and the load generator on
the others.

`--profile FILE` samples the gateway with py-spy (`pip install py-spy`) during the
N-connection phases through it and writes a summary (the functions with the largest
share of samples, on their own and with what they call) to FILE, per framing.

A measurement, not a test: the targets are printed next to the results, not asserted.
Every process it starts is stopped on exit, errors and SIGTERM included.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import proxy_overhead as bench
import yaml

HERE = Path(__file__).resolve()
MCP_TOOL = "add"
ARGUMENTS = {"a": 2, "b": 3}
EXPECTED = {"result": 5.0}
PROTOCOL_VERSION = "2025-11-25"
CALL = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {"name": MCP_TOOL, "arguments": ARGUMENTS},
}
# The load generator of bench/proxy_overhead.py sends its module's BODY.
bench.BODY = json.dumps(CALL)

# Answer framing -> the server's `json_response`.
FRAMINGS = {"json": True, "sse": False}

TARGET_CPU_US = 250  # callgate CPU per tools/call
TARGET_RATIO = 0.9  # through the gateway / direct, requests/s at N connections


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def gateway_tool(framing: str) -> str:
    return f"mcp-{framing}"


# --------------------------------------------------------------------------- child role


def server_main(port: int, framing: str) -> None:
    """The MCP server: one tool, stateless, answers as JSON or SSE."""
    import uvicorn
    from mcp.server import MCPServer

    server = MCPServer(name="bench-tools", version="1.0.0")

    @server.tool()
    def add(a: float, b: float) -> float:
        """Add two numbers."""
        return a + b

    app = server.streamable_http_app(
        streamable_http_path="/mcp",
        json_response=FRAMINGS[framing],
        stateless_http=True,
        host="127.0.0.1",
    )
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    web = uvicorn.Server(config)

    async def main() -> None:
        import asyncio

        serving = asyncio.ensure_future(web.serve())
        while not web.started and not serving.done():
            await asyncio.sleep(0.02)
        print(json.dumps({"ready": True, "loop": bench.loop_name()}), flush=True)
        await serving  # uvicorn stops on SIGINT/SIGTERM

    bench.run_loop(main())


# --------------------------------------------------------------------------- set-up


def write_policy(tmp: Path) -> Path:
    """The default policy, its data granting `support` the MCP tool `add` on both tools."""
    folder = tmp / "policies"
    folder.mkdir()
    shutil.copy(bench.POLICIES / "gateway.rego", folder / "gateway.rego")
    data = json.loads((bench.POLICIES / "data.json").read_text())
    for framing in FRAMINGS:
        grant = {"methods": ["POST"], "mcp_tools": [MCP_TOOL]}
        data["grants"][bench.ROLE][gateway_tool(framing)] = grant
    (folder / "data.json").write_text(json.dumps(data, indent=2))
    return folder


def write_config(tmp: Path, servers: dict[str, int], listen: int, admin: int) -> Path:
    path = bench.write_config(tmp, "audit-normal", servers["json"], listen, admin)
    tree = yaml.safe_load(path.read_text())
    tree["policy"]["path"] = str(write_policy(tmp))
    tree["tools"] = [
        {
            "name": gateway_tool(framing),
            "kind": "mcp",
            "upstream": f"http://127.0.0.1:{port}/mcp",
            "credentials": {"header": "Authorization", "value": f"Bearer {bench.TOOL_SECRET}"},
            "timeout_s": 10,
        }
        for framing, port in servers.items()
    ]
    config = tmp / "mcp.yaml"
    config.write_text(yaml.safe_dump(tree, sort_keys=False))
    return config


def headers(token: str | None) -> dict[str, str]:
    found = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": PROTOCOL_VERSION,
    }
    if token is not None:
        found["Authorization"] = f"Bearer {token}"
    return found


def answer_message(content_type: str, body: bytes) -> Any:
    """The JSON-RPC response in a JSON or SSE answer."""
    text = body.decode()
    if content_type.startswith("text/event-stream"):
        data = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
        return json.loads(data[-1]) if data and data[-1] else None
    return json.loads(text)


def check_call(url: str, sent: dict[str, str], what: str, framing: str) -> None:
    """One call, before any load: a refusal is HTTP 200 too, and would measure nothing."""
    status, got, body = bench.http("POST", url, bench.BODY.encode(), sent)
    content_type = next((v for k, v in got.items() if k.lower() == "content-type"), "")
    try:
        message = answer_message(content_type, body)
    except ValueError:
        message = None
    result = message.get("result") if isinstance(message, dict) else None
    if (
        status != 200
        or not isinstance(result, dict)
        or result.get("isError")
        or result.get("structuredContent") != EXPECTED
    ):
        raise RuntimeError(f"{what}: expected the tool's result, got {status}: {body[:300]!r}")
    wanted = "text/event-stream" if framing == "sse" else "application/json"
    if not content_type.startswith(wanted):
        raise RuntimeError(f"{what}: expected {wanted}, got {content_type!r}")


# --------------------------------------------------------------------------- profiling


def start_profile(procs: bench.Procs, pid: int, raw: Path) -> subprocess.Popen[bytes] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise RuntimeError("--profile: py-spy is not installed (pip install py-spy)")
    argv = [spy, "record", "-r", "200", "--threads", "-f", "raw", "-o", str(raw)]
    argv += ["--nonblocking", "-p", str(pid)]
    proc = procs.start(argv, None, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)
    if proc.poll() is not None:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise RuntimeError(f"py-spy failed to start: {err.strip()[-300:]}")
    return proc


def stop_profile(procs: bench.Procs, proc: subprocess.Popen[bytes]) -> None:
    # py-spy writes its file on SIGINT.
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, 2)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(20)
    procs.stop(proc)


def _short(frame: str) -> str:
    """`name (path/to/file.py:12)` -> `name (file.py)`: lines of one function merged."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/gateway/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "/gateway/":
                path = "gateway/" + path
            break
    return f"{name} ({path})"


# Where a sample's time goes: the first of these its innermost frames match.
AREAS = [
    ("event loop and sockets (uvloop, C)", ("Runner.run (",)),
    ("audit log (records, chain, SQLite writer)", ("(gateway/audit/", "aiosqlite/", "sqlite3")),
    ("policy engine", ("(gateway/policy/",)),
    ("access log and logging", ("(gateway/observability/logs", "logging/")),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("aiohttp (server, client)", ("aiohttp/", "multidict/", "yarl/")),
    ("MCP (gateway/mcp/)", ("(gateway/mcp/",)),
    ("rest of callgate (gateway/)", ("(gateway/",)),
]


def area_of(short: list[str]) -> str:
    for frame in reversed(short):
        for area, markers in AREAS:
            if any(marker in frame for marker in markers):
                return area
    return "other"


def summarize_profile(raw: Path, top: int = 30) -> str:
    """The functions with the largest share of the samples of the busiest thread (the
    event loop's): on their own (self) and with everything they call (inclusive)."""
    by_thread: dict[str, list[tuple[list[str], int]]] = collections.defaultdict(list)
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        thread = next((f for f in frames if f.startswith("thread ")), "thread (?)")
        frames = [f for f in frames if not f.startswith(("thread ", "process "))]
        by_thread[thread].append((frames, int(count_text)))
    if not by_thread:
        return "no samples\n"
    counts = {t: sum(n for _, n in samples) for t, samples in by_thread.items()}
    main_thread = max(counts, key=lambda t: counts[t])
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    files: collections.Counter[str] = collections.Counter()
    mcp: collections.Counter[str] = collections.Counter()
    areas: collections.Counter[str] = collections.Counter()
    mcp_total = 0
    total = counts[main_thread]
    for frames, count in by_thread[main_thread]:
        if not frames:
            continue
        short = [_short(f) for f in frames]
        own[short[-1]] += count
        areas[area_of(short)] += count
        for name in set(short):
            inclusive[name] += count
        # The innermost frame in callgate's own code: where callgate's share goes.
        mine = next((f for f in reversed(short) if "(gateway/" in f), None)
        in_mcp = {name for name in short if "(gateway/mcp/" in name}
        for name in in_mcp:
            mcp[name] += count
        mcp_total += count if in_mcp else 0
        files[mine.split("(", 1)[1].rstrip(")") if mine else "(not under gateway/)"] += count
    others = sum(counts.values()) - total
    if not total:
        return "no samples\n"

    def table(counter: collections.Counter[str], top: int = top) -> list[str]:
        return [f"  {100 * n / total:5.1f}%  {name}" for name, n in counter.most_common(top)]

    return "\n".join(
        [
            f"{total} samples of the gateway's busiest thread (the event loop); "
            f"{others} of its other threads (the audit writer's, say)",
            "",
            "by area (the first area the innermost frames of a sample fall in):",
            *table(areas),
            "",
            "self (the function itself):",
            *table(own),
            "",
            "inclusive (the function and what it calls):",
            *table(inclusive),
            "",
            "by callgate file (the innermost gateway/ frame of each sample):",
            *table(files),
            "",
            "gateway/mcp/ (inclusive; the MCP-specific work):",
            *table(mcp, top=100),
            f"  {100 * mcp_total / total:5.1f}%  any gateway/mcp/ frame on the stack",
            "",
        ]
    )


# --------------------------------------------------------------------------- the benchmark


def run_benchmark(args: argparse.Namespace, procs: bench.Procs, tmp: Path) -> dict[str, Any]:
    gateway_cpus, load_cpus, pin_text = bench.plan_cpus(not args.no_pin)
    if load_cpus:
        os.sched_setaffinity(0, load_cpus)
    wrk = shutil.which("wrk")
    kind = args.loadgen if args.loadgen != "auto" else ("wrk" if wrk else "python")
    if kind == "wrk" and not wrk:
        raise RuntimeError("--loadgen wrk: wrk is not on PATH (apt-get install wrk)")
    loadgen = bench.LoadGen(
        kind, load_cpus, procs, tmp, wrk=wrk, threads=len(load_cpus or os.sched_getaffinity(0))
    )
    logs = args.logs or tmp
    logs.mkdir(parents=True, exist_ok=True)

    ports = bench.free_ports(len(FRAMINGS) + 2)
    servers: dict[str, int] = {}
    server_procs: dict[str, subprocess.Popen[bytes]] = {}
    server_info: dict[str, dict[str, Any]] = {}
    for framing, port in zip(FRAMINGS, ports, strict=False):
        with (logs / f"server-{framing}.log").open("wb") as err:
            proc = procs.start(
                [sys.executable, str(HERE), "_server", str(port), framing],
                load_cpus,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        server_info[framing] = bench.read_ready_line(proc, f"the {framing} MCP server")
        servers[framing], server_procs[framing] = port, proc

    listen, admin_port = ports[-2:]
    config = write_config(tmp, servers, listen, admin_port)
    gateway_log = logs / "gateway.log"
    gateway = bench.start_gateway(procs, config, gateway_log, args.log_level, gateway_cpus)
    admin = f"http://127.0.0.1:{admin_port}"
    readyz = bench.wait_ready(gateway, f"{admin}/readyz", gateway_log)

    targets: dict[tuple[str, str], tuple[str, dict[str, str]]] = {}
    for framing, port in servers.items():
        targets[(framing, "direct")] = (f"http://127.0.0.1:{port}/mcp", headers(None))
        url = f"http://127.0.0.1:{listen}/tools/{gateway_tool(framing)}"
        targets[(framing, "gateway")] = (url, headers(bench.AGENT_TOKEN))
    for (framing, target), (url, sent) in targets.items():
        check_call(url, sent, f"{target} ({framing})", framing)

    profiles: dict[str, str] = {}
    phases: list[dict[str, Any]] = []
    plan = [
        (framing, target, n)
        for n in (args.connections, 1)
        for framing in FRAMINGS
        for target in ("direct", "gateway")
    ]
    for framing, target, connections in plan:
        url, sent = targets[(framing, target)]
        server = server_procs[framing]
        log(f"{framing:4} {target:7} c={connections}: {args.warmup}s warm-up, {args.duration}s")
        if args.warmup > 0:
            loadgen.run(url, sent, connections, args.warmup)
        spy = None
        raw = tmp / f"profile-{framing}.txt"
        if args.profile and target == "gateway" and connections == args.connections:
            spy = start_profile(procs, gateway.pid, raw)
        before = bench.scrape(f"{admin}/metrics")
        gw_cpu0, sv_cpu0 = bench.cpu_seconds(gateway.pid), bench.cpu_seconds(server.pid)
        wall0 = time.monotonic()
        result = loadgen.run(url, sent, connections, args.duration)
        wall = time.monotonic() - wall0
        gw_cpu = bench.cpu_seconds(gateway.pid) - gw_cpu0
        sv_cpu = bench.cpu_seconds(server.pid) - sv_cpu0
        after = bench.scrape(f"{admin}/metrics")
        if spy is not None:
            stop_profile(procs, spy)
            profiles[framing] = summarize_profile(raw) if raw.exists() else "no profile written\n"
            if args.logs and raw.exists():
                shutil.copy(raw, args.logs / raw.name)
        for proc, what in [
            (gateway, "the gateway"),
            *((p, f"the {f} server") for f, p in server_procs.items()),
        ]:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{what} exited with status {proc.returncode} during the {framing} "
                    f"{target} c={connections} phase:\n{bench.tail(gateway_log)}"
                )
        delta = {k: v - before.get(k, 0.0) for k, v in after.items()}
        served = int(delta["requests"])
        busy = result["duration_s"] or wall
        phase = {
            "framing": framing,
            "target": target,
            "connections": connections,
            **{k: result[k] for k in ("requests", "duration_s", "rps")},
            **{k: result[k] for k in ("p50_us", "p90_us", "p99_us", "mean_us", "max_us")},
            "errors": result["errors"],
            "wall_s": wall,
            "server_cpu_s": sv_cpu,
            "server_cpu_us_per_call": 1e6 * sv_cpu / max(1, result["requests"]),
            "gateway_cpu_s": gw_cpu,
        }
        if target == "gateway":
            phase.update(
                gateway_cpu_us_per_call=1e6 * gw_cpu / served if served else None,
                **bench.gateway_figures(delta, gw_cpu, busy),
            )
        phases.append(phase)

    def find(framing: str, target: str, connections: int) -> dict[str, Any]:
        return next(
            p
            for p in phases
            if (p["framing"], p["target"], p["connections"]) == (framing, target, connections)
        )

    n = args.connections
    summary: dict[str, Any] = {}
    for framing in FRAMINGS:
        d_n, g_n = find(framing, "direct", n), find(framing, "gateway", n)
        d_1, g_1 = find(framing, "direct", 1), find(framing, "gateway", 1)
        ratio = g_n["rps"] / d_n["rps"] if d_n["rps"] else None
        cpu = g_n["gateway_cpu_us_per_call"]
        summary[framing] = {
            "throughput_ratio_through_over_direct": ratio,
            "throughput_ratio_through_over_direct_1_connection": (
                g_1["rps"] / d_1["rps"] if d_1["rps"] else None
            ),
            "added_p50_us_1_connection": g_1["p50_us"] - d_1["p50_us"],
            f"added_p50_us_{n}_connections": g_n["p50_us"] - d_n["p50_us"],
            "gateway_cpu_us_per_call": cpu,
            "gateway_cpu_us_per_call_1_connection": g_1["gateway_cpu_us_per_call"],
            "targets": {
                "gateway_cpu_us_per_call": {
                    "target": f"<= {TARGET_CPU_US}",
                    "measured": cpu,
                    "met": cpu is not None and cpu <= TARGET_CPU_US,
                },
                "throughput_ratio": {
                    "target": f">= {TARGET_RATIO}",
                    "measured": ratio,
                    "met": ratio is not None and ratio >= TARGET_RATIO,
                },
            },
        }
    import mcp

    return {
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": n,
            "request": f"POST tools/call {MCP_TOOL}, {len(bench.BODY)}-byte JSON-RPC body, "
            f"MCP-Protocol-Version {PROTOCOL_VERSION}",
            "gateway_log_level": args.log_level,
            "audit": "on, synchronous NORMAL",
            "policy_version": readyz.get("policy_version"),
            "mcp_sdk": getattr(mcp, "__version__", None) or _version("mcp"),
        },
        "machine": {
            "cpus": sorted(os.sched_getaffinity(0) | (gateway_cpus or set())),
            "loadavg_before": Path("/proc/loadavg").read_text().split()[:3],
        },
        "load_generator": {"kind": kind, "description": loadgen.describe()},
        "pinning": pin_text.replace("the floor proxy", "nothing else").replace(
            "upstream", "MCP servers"
        ),
        "servers_loop": {f: i.get("loop") for f, i in server_info.items()},
        "phases": phases,
        "gateway_errors": bench.gateway_errors(gateway_log),
        "summary": summary,
        "profiles": profiles,
    }


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


# --------------------------------------------------------------------------- report


def report(r: dict[str, Any]) -> str:
    s = r["settings"]
    n = s["connections"]
    fmt = bench.fmt_us
    lines = [
        f"callgate MCP overhead: {s['request']}, {s['duration_s']} s per phase "
        f"(after {s['warmup_s']} s warm-up), audit {s['audit']}, gateway log level "
        f"{s['gateway_log_level']}",
        f"MCP servers: official SDK {s['mcp_sdk']} (MCPServer, stateless Streamable HTTP, "
        f"uvicorn; loops {r['servers_loop']})",
        f"machine: CPUs {r['machine']['cpus']}, load average before "
        f"{' '.join(r['machine']['loadavg_before'])}",
        f"load generator: {r['load_generator']['description']}",
        f"pinning: {r['pinning']}",
        "",
        f"{'phase':<24}{'req/s':>9}{'p50 µs':>9}{'p99 µs':>9}{'calls':>9}"
        f"{'gw CPU µs/call':>16}  errors",
    ]
    for p in r["phases"]:
        errors = {k: v for k, v in p["errors"].items() if v}
        cpu = p.get("gateway_cpu_us_per_call")
        lines.append(
            f"{p['framing'] + ' ' + p['target'] + ' c=' + str(p['connections']):<24}"
            f"{p['rps']:>9,.0f}{fmt(p['p50_us']):>9}{fmt(p['p99_us']):>9}{p['requests']:>9,}"
            f"{fmt(cpu) if p['target'] == 'gateway' else '':>16}  {errors or 'none'}"
        )
    lines += ["", "targets (informational, not asserted):"]
    for framing, summary in r["summary"].items():
        t = summary["targets"]
        cpu, ratio = t["gateway_cpu_us_per_call"], t["throughput_ratio"]
        g_n = next(
            p
            for p in r["phases"]
            if (p["framing"], p["target"], p["connections"]) == (framing, "gateway", n)
        )
        lines += [
            f"  {framing} answers:",
            f"    callgate CPU per tools/call  target {cpu['target']} µs: measured "
            f"{fmt(cpu['measured'])} µs at {n} connections -> "
            f"{'met' if cpu['met'] else 'NOT met'} "
            f"({fmt(summary['gateway_cpu_us_per_call_1_connection'])} µs at 1 connection; "
            f"gateway core {g_n['gateway_core_utilisation']:.0%} busy at {n})",
            f"    throughput through/direct    target {ratio['target']}: measured "
            + ("n/a" if ratio["measured"] is None else f"{ratio['measured']:.2f}")
            + f" at {n} connections -> {'met' if ratio['met'] else 'NOT met'} "
            f"({summary['throughput_ratio_through_over_direct_1_connection'] or 0:.2f} at 1)",
            f"    audit records per commit: {g_n['audit_records_per_commit'] or 0:.1f} at {n} "
            f"connections; mean policy evaluation {fmt(g_n['gateway_mean_policy_us'])} µs",
            f"    added p50: {summary['added_p50_us_1_connection']:+,.0f} µs at 1 connection, "
            f"{summary[f'added_p50_us_{n}_connections']:+,.0f} µs at {n}",
        ]
    notes = []
    for p in r["phases"]:
        others = {k: v for k, v in p.get("gateway_outcomes", {}).items() if k != "forwarded"}
        if others:
            notes.append(
                f"{p['framing']} gateway c={p['connections']}: outcomes other than "
                f"forwarded: {others} (stream_broken up to the connection count is the load "
                "generator hanging up on calls in flight when a phase ends)"
            )
    if any(any(p["errors"].values()) for p in r["phases"]):
        notes.append("the load generator saw failed calls: see the errors column")
    notes.append(
        "the MCP servers share their core with the load generator: when the server is the "
        "limit, through/direct tends to 1 whatever the gateway costs; its CPU per call is "
        "the figure to watch"
    )
    notes += [f"gateway log error: {e}" for e in r["gateway_errors"]]
    lines += ["", "notes:", *(f"  - {note}" for note in notes)]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Drive MCP tools/call at an SDK server directly and through callgate."
    )
    parser.add_argument("--duration", type=bench.positive_int, default=10, help="seconds (10)")
    parser.add_argument("--connections", type=bench.positive_int, default=50, help="(50)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up (1)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--log-level", default="INFO", help="gateway log level (INFO)")
    parser.add_argument("--logs", type=Path, default=None, help="keep the logs in this folder")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="sample the gateway with py-spy at N connections; write the summary here",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    if argv[:1] == ["_server"]:
        server_main(int(argv[1]), argv[2])
        return 0
    args = parse_args(argv)
    result = bench.run_in_a_temporary_folder(
        "callgate-mcp-", lambda procs, tmp: run_benchmark(args, procs, tmp)
    )
    if isinstance(result, int):
        return result
    if args.profile:
        args.profile.parent.mkdir(parents=True, exist_ok=True)
        args.profile.write_text(
            "".join(
                f"== {framing} answers ==\n{text}\n" for framing, text in result["profiles"].items()
            )
        )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
