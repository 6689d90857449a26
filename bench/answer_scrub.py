#!/usr/bin/env python3
"""What scrubbing a tool's answer adds per call (docs/answers-and-pins.md).

    python bench/answer_scrub.py [--calls 20000] [--json]

For a typical small answer (8 response headers, a ~200-byte JSON body in one chunk, as
bench/proxy_overhead.py's upstream sends) it times, in this process, the work forward adds
to a call: the response headers through `Redactor.text` and the body through
`Redactor.stream`, for a tool

- `none`: no credentials, no patterns (the gateway does no scrubbing work at all: the
  redactor is None, so this is only that lookup);
- `credential`: a `Bearer` credential (as bench/proxy_overhead.py's tool has);
- `patterns`: a credential and two `redact_response` patterns (card numbers, API keys);
- `patterns-64k`: the same on a 64 KiB JSON body in 16 chunks of 4 KiB.

It prints the p50 and mean µs per call. A measurement, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gateway.answer_guard import redactor_of  # noqa: E402
from gateway.config import Tool  # noqa: E402

HEADERS = [
    ("Content-Type", "application/json; charset=utf-8"),
    ("Date", "Fri, 04 Dec 2026 02:00:00 GMT"),
    ("Server", "Python/3.11 aiohttp/3.11"),
    ("Cache-Control", "no-store"),
    ("X-Ticket", "T-1234"),
    ("Vary", "Accept-Encoding"),
    ("ETag", '"3f2a9c"'),
    ("X-Trace", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
]
SMALL = json.dumps(
    {"id": 1234, "status": "open", "subject": "printer on fire", "tags": ["hw", "urgent"]}
    | {"assignee": "support-bot", "created_at": "2026-12-04T02:00:00Z", "priority": 2}
).encode()
PATTERNS = (r"\b(?:\d[ -]?){13,19}\b", r"sk_live_[A-Za-z0-9]{20,}")


def tool(kind: str) -> Tool:
    fields: dict[str, object] = {"name": "demo", "upstream": "http://127.0.0.1:9"}
    if kind != "none":
        fields["credentials"] = {"header": "Authorization", "value": "Bearer demo-tool-secret-1"}
    if kind.startswith("patterns"):
        fields["redact_response"] = PATTERNS
        fields["max_match_bytes"] = 64
    return Tool.model_validate(fields).with_secrets([])


async def _chunks(body: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in body:
        yield chunk


async def one_call(t: Tool, body: list[bytes]) -> int:
    redactor = redactor_of(t)
    if redactor is None:
        return sum(len(c) for c in body)
    counts: dict[str, int] = {}
    for _, value in HEADERS:
        redactor.text(value, counts)
    size = 0
    async for chunk in redactor.stream(_chunks(body), counts):
        size += len(chunk)
    return size


async def measure(kind: str, calls: int) -> dict[str, float]:
    t = tool(kind)
    if kind.endswith("64k"):
        big = (SMALL + b"\n") * (65536 // (len(SMALL) + 1))
        body = [big[i : i + 4096] for i in range(0, len(big), 4096)]
    else:
        body = [SMALL]
    for _ in range(500):  # warm-up
        await one_call(t, body)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        await one_call(t, body)
        times.append((time.perf_counter() - started) * 1e6)
    return {"p50_us": statistics.median(times), "mean_us": statistics.fmean(times)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = {}
    for kind in ("none", "credential", "patterns", "patterns-64k"):
        calls = args.calls if not kind.endswith("64k") else max(args.calls // 20, 100)
        results[kind] = await measure(kind, calls)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for kind, numbers in results.items():
        print(f"{kind:14} p50 {numbers['p50_us']:8.2f} µs   mean {numbers['mean_us']:8.2f} µs")


if __name__ == "__main__":
    asyncio.run(main())
