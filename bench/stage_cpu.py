#!/usr/bin/env python3
"""`callgate serve` with the CPU of each pipeline stage counted: where callgate's own work
per call goes, stage by stage, next to the py-spy profiles in bench/profiles/.

    python bench/stage_cpu.py serve --config callgate.yaml --log-level WARNING
    # load it at ONE connection (wrk -c1 ...), then:
    kill -USR1 <pid>   # print the means since the last USR1 to stderr, and start again

Each stage's figure is the event loop thread's CPU time (`time.thread_time`, so other
processes on a shared core do not count) from the stage's start to its end, less, for an
around-stage, the stages it wraps. Meaningful at one connection only: while a stage awaits,
the loop runs whatever else is ready, and at one connection that is only the call's own
background work (the audit writer sealing and committing its records, counted in `intent`
and `account`), never another call. `forward` holds aiohttp's client and the relay of the
answer, most of which the bare proxy of bench/proxy_overhead.py spends too.
"""

from __future__ import annotations

import collections
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gateway import pipeline
from gateway.cli import main
from gateway.pipeline.stage import Around, Rest, Stage

_spent: collections.defaultdict[str, float] = collections.defaultdict(float)
_calls: collections.Counter[str] = collections.Counter()


def _timed_around(name: str, wrap: Callable[[Any, Any, Rest], Awaitable[Any]]) -> Around:
    async def timed(call: Any, svc: Any, rest: Rest) -> Any:
        inner = 0.0

        async def timed_rest() -> Any:
            nonlocal inner
            started = time.thread_time()
            try:
                return await rest()
            finally:
                inner += time.thread_time() - started

        started = time.thread_time()
        try:
            return await wrap(call, svc, timed_rest)
        finally:
            _spent[name] += time.thread_time() - started - inner
            _calls[name] += 1

    return Around(timed)


def _timed(name: str, stage: Stage) -> Stage:
    async def timed(call: Any, svc: Any) -> Any:
        started = time.thread_time()
        try:
            return await stage(call, svc)
        finally:
            _spent[name] += time.thread_time() - started
            _calls[name] += 1

    return timed


def report(*_: Any) -> None:
    lines = []
    for name, _stage in pipeline.STAGES:
        if calls := _calls[name]:
            lines.append(f"{name:<12} {1e6 * _spent[name] / calls:8.1f} µs  ({calls})")
    total = sum(1e6 * _spent[name] / _calls[name] for name in _calls if _calls[name])
    lines.append(f"{'all stages':<12} {total:8.1f} µs")
    print("\n".join(lines), file=sys.stderr, flush=True)
    _spent.clear()
    _calls.clear()


def instrument() -> None:
    pipeline.STAGES = tuple(
        (name, _timed_around(name, s.wrap) if isinstance(s, Around) else _timed(name, s))
        for name, s in pipeline.STAGES
    )


if __name__ == "__main__":
    instrument()
    signal.signal(signal.SIGUSR1, report)
    sys.argv = ["callgate", *sys.argv[1:]]
    main()
