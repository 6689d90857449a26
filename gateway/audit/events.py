"""Record times, and the records the gateway writes about itself."""

from __future__ import annotations

import functools
import time
from typing import Any


@functools.lru_cache(maxsize=4)
def _second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def now() -> str:
    """UTC, to the microsecond: `2026-11-24T10:00:00.123456Z` (sorts as it reads)."""
    return iso(time.time())


def iso(moment: float) -> str:
    """A `time.time()` value in the form of `now()`."""
    return f"{_second(int(moment))}.{int(moment * 1_000_000) % 1_000_000:06d}Z"


def event(kind: str, **fields: Any) -> dict[str, Any]:
    """A record about the gateway itself: start-up, policy loads, store outages."""
    return {"kind": kind, "time": now(), **fields}
