#!/usr/bin/env python3
"""Decision latency of the two policy engines in one run: embedded regorus and OPA.

    python bench/policy_engines.py [--decisions 5000] [--policies DIR] [--json]

Both engines decide the same input documents with the same policy folder (the repo's
default `policies/` unless --policies): one allowed call and one denied call, alternating.

- embedded: `EmbeddedEngine.evaluate()` in this process, as the gateway's decide stage
  calls it (on the event loop).
- opa: `OpaEngine.evaluate()` against `opa run --server` on 127.0.0.1 (the binary from
  PATH or CALLGATE_OPA_BIN), with the policies pushed to it as the gateway pushes them;
  one pooled connection, as in the gateway. Skipped, and said so, without a binary.

Decisions are made one at a time after a warm-up; it prints p50/p90/p99 per engine and
the OPA/embedded ratio of each. A measurement, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("RUST_LIB_BACKTRACE", "0")

from gateway.policy.decision import Decision  # noqa: E402
from gateway.policy.embedded import EmbeddedEngine  # noqa: E402
from gateway.policy.loader import read_policy_dir  # noqa: E402
from gateway.policy.opa import OpaEngine  # noqa: E402

WARM_UP = 200


def inputs() -> list[dict[str, Any]]:
    def call(method: str, roles: list[str]) -> dict[str, Any]:
        return {
            "agent": {"id": "support-bot", "roles": roles},
            "tool": {"name": "demo", "kind": "http"},
            "request": {
                "method": method,
                "path": "/tickets",
                "query": {},
                "headers": {"content-type": "application/json"},
                "body": {"title": "printer on fire"},
                "size": 29,
            },
            "mcp": None,
            "context": {"request_id": "r", "time": "2026-11-24T10:00:00Z", "session": None},
        }

    return [call("POST", ["support"]), call("DELETE", ["nobody"])]


async def measure(
    decide: Callable[[dict[str, Any]], Awaitable[Decision]], count: int
) -> dict[str, float]:
    docs = inputs()
    outcomes = {(await decide(doc)).allow for doc in docs}
    assert outcomes == {True, False}, "the bench inputs should give one allow and one deny"
    for n in range(WARM_UP):
        await decide(docs[n % 2])
    times = []
    for n in range(count):
        started = time.perf_counter()
        await decide(docs[n % 2])
        times.append((time.perf_counter() - started) * 1e6)
    cuts = statistics.quantiles(times, n=100)
    return {"p50_us": cuts[49], "p90_us": cuts[89], "p99_us": cuts[98], "decisions": count}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_opa(binary: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, "run", "--server", "--addr", f"127.0.0.1:{port}"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"opa exited: {log.read_text(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            await asyncio.sleep(0.05)
    proc.kill()
    raise RuntimeError("opa did not start within 20 s")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=5000)
    parser.add_argument("--policies", type=Path, default=REPO / "policies")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()

    policy_set = read_policy_dir(args.policies)
    results: dict[str, Any] = {}
    embedded = EmbeddedEngine()
    await embedded.activate(policy_set)
    results["embedded"] = await measure(embedded.evaluate, args.decisions)
    await embedded.close()

    binary = os.environ.get("CALLGATE_OPA_BIN") or shutil.which("opa")
    if binary is None:
        results["opa"] = {"skipped": "no opa binary on PATH (or CALLGATE_OPA_BIN)"}
    else:
        port = free_port()
        with tempfile.TemporaryDirectory() as scratch:
            proc = await start_opa(binary, port, Path(scratch) / "opa.log")
            opa = OpaEngine(f"http://127.0.0.1:{port}", "gateway/decision", timeout_s=5)
            try:
                await opa.activate(policy_set)
                results["opa"] = await measure(opa.evaluate, args.decisions)
            finally:
                await opa.close()
                proc.terminate()
                proc.wait(10)
        results["ratio_opa_to_embedded"] = {
            key: results["opa"][key] / results["embedded"][key]
            for key in ("p50_us", "p90_us", "p99_us")
        }

    if args.json:
        print(json.dumps(results, indent=2))
        return
    version = policy_set.policy_version[:12]
    print(f"policy: {args.policies} (version {version}), one decision at a time")
    for engine in ("embedded", "opa"):
        row = results[engine]
        if "skipped" in row:
            print(f"  {engine:9} skipped: {row['skipped']}")
            continue
        print(
            f"  {engine:9} p50 {row['p50_us']:8.1f} µs   p90 {row['p90_us']:8.1f} µs   "
            f"p99 {row['p99_us']:8.1f} µs   ({row['decisions']} decisions)"
        )
    if "ratio_opa_to_embedded" in results:
        ratio = results["ratio_opa_to_embedded"]
        print(
            f"  opa/embedded: p50 x{ratio['p50_us']:.1f}, p90 x{ratio['p90_us']:.1f}, "
            f"p99 x{ratio['p99_us']:.1f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
