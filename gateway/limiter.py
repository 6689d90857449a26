"""Counting calls against limits: the `limits` library's moving window, in memory or on
Redis (gateway/redis_limits.py), and the list of stuck sessions (docs/limits.md).

One interface (`Limiter`) whatever the storage. `check()` tests every limit first and
only then counts the call against all of them, so a call refused by one limit does not
use up another. Testing and counting are one step: concurrent checks in a process are
serialized (the storage awaits between the test and the count, so without that every
caller could pass the same test), and a count the storage refuses (another process took
the last slot meanwhile) is a refusal too. On Redis the count is one Lua script, atomic
across processes, so no call passes beyond the limit over all of them.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

# After the storage failed, checks fail at once for this long (then the storage is tried
# again): calls waiting for the lock would otherwise each wait out a hung Redis's timeouts.
FAIL_FAST_S = 1.0

LOOP = "loop"
SESSION = "session"
RATE = "rate"


@dataclass(frozen=True, slots=True)
class Limit:
    name: str  # shown to the agent: agent, tool, agent_tool, loop, session or the policy's key
    key: str  # what is counted
    limit: int
    window_s: float
    # What a refusal means: LOOP (the loop breaker), SESSION (the session's budget) or
    # RATE (any rate, the policy's included, whatever its name).
    kind: str = RATE

    @property
    def item(self) -> RateLimitItem:
        return RateLimitItemPerSecond(self.limit, max(1, math.ceil(self.window_s)))


class StorageFailing(Exception):
    """The storage failed a moment ago: the check was not tried."""


@dataclass(frozen=True, slots=True)
class Exceeded:
    limit: Limit
    retry_after_s: int


class Limiter:
    def __init__(
        self,
        storage: Storage | None = None,
        *,
        where: str = "memory",
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`where` names the storage in messages (no password); `close` releases it."""
        self._storage = storage or MemoryStorage()
        self._window = MovingWindowRateLimiter(self._storage)
        self.where = where
        self._close = close
        # One check at a time in this process: test-then-count must not interleave.
        self._lock = asyncio.Lock()
        self._failing_until = 0.0  # time.monotonic()

    async def check(self, limits: list[Limit]) -> Exceeded | None:
        """The first limit this call would exceed, or None after counting it against all.
        Raises when the storage fails, and for FAIL_FAST_S after that without trying it."""
        async with self._lock:
            if time.monotonic() < self._failing_until:
                raise StorageFailing(f"{self.where} failed less than {FAIL_FAST_S}s ago")
            try:
                return await self._check(limits)
            except Exception:
                self._failing_until = time.monotonic() + FAIL_FAST_S
                raise

    async def _check(self, limits: list[Limit]) -> Exceeded | None:
        for limit in limits:
            if not await self._window.test(limit.item, limit.key):
                return await self._exceeded(limit)
        for limit in limits:
            if not await self._window.hit(limit.item, limit.key):
                # Only a storage shared with other processes gets here (they took the last
                # slot between test and count); the limits counted so far keep the call,
                # as the moving window has no way to take a count back.
                return await self._exceeded(limit)
        return None

    async def _exceeded(self, limit: Limit) -> Exceeded:
        stats = await self._window.get_window_stats(limit.item, limit.key)
        return Exceeded(limit, max(1, math.ceil(stats.reset_time - time.time())))

    async def unavailable(self) -> str | None:
        """Why the storage cannot count calls now (for /readyz), or None when it can."""
        if await self._storage.check():
            return None
        return f"{self.where} does not answer"

    async def close(self) -> None:
        if self._close is not None:
            await self._close()


@dataclass(slots=True)
class StuckSession:
    agent: str
    session: str
    reason: str  # budget_exhausted or loop_detected
    since: float
    until: float
    refusals: int = 0


class StuckSessions(Protocol):
    """Agent sessions that hit their call budget or the loop breaker, for operators
    (GET /api/v1/sessions?state=stuck); an entry lasts as long as the refusal does."""

    async def flag(self, agent: str, session: str, reason: str, retry_after_s: int) -> int:
        """Record a refusal; how many sessions are stuck now (ended entries dropped)."""

    async def current(self) -> list[StuckSession]: ...


class MemoryStuckSessions:
    """The stuck sessions of this process (limits in memory)."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], StuckSession] = {}

    async def flag(self, agent: str, session: str, reason: str, retry_after_s: int) -> int:
        moment = time.time()
        self._prune(moment)
        entry = self._entries.setdefault(
            (agent, session), StuckSession(agent, session, reason, moment, moment)
        )
        entry.reason = reason
        entry.until = moment + retry_after_s
        entry.refusals += 1
        return len(self._entries)

    async def current(self) -> list[StuckSession]:
        self._prune(time.time())
        return list(self._entries.values())

    def _prune(self, moment: float) -> None:
        for key in [k for k, v in self._entries.items() if v.until < moment]:
            del self._entries[key]
