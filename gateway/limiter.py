"""Counting calls against limits: the `limits` library's moving window, in memory.

One interface (`Limiter`) so that a Redis storage can replace the memory one for many
replicas. `check()` tests every limit first and only then counts the call against all of
them, so a call refused by one limit does not use up another.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter


@dataclass(frozen=True, slots=True)
class Limit:
    name: str  # shown to the agent: agent, tool, agent_tool, loop, session or the policy's key
    key: str  # what is counted
    limit: int
    window_s: float

    @property
    def item(self) -> RateLimitItem:
        return RateLimitItemPerSecond(self.limit, max(1, math.ceil(self.window_s)))


@dataclass(frozen=True, slots=True)
class Exceeded:
    limit: Limit
    retry_after_s: int


class Limiter:
    def __init__(self, storage: Storage | None = None) -> None:
        self._window = MovingWindowRateLimiter(storage or MemoryStorage())

    async def check(self, limits: list[Limit]) -> Exceeded | None:
        """The first limit this call would exceed, or None after counting it against all."""
        for limit in limits:
            if not await self._window.test(limit.item, limit.key):
                stats = await self._window.get_window_stats(limit.item, limit.key)
                retry = max(1, math.ceil(stats.reset_time - time.time()))
                return Exceeded(limit, retry)
        for limit in limits:
            await self._window.hit(limit.item, limit.key)
        return None


@dataclass(slots=True)
class StuckSession:
    agent: str
    session: str
    reason: str  # budget_exhausted or loop_detected
    since: float
    until: float
    refusals: int = 0


class StuckSessions:
    """Agent sessions that hit their call budget or the loop breaker, for operators
    (GET /api/v1/sessions?state=stuck); an entry lasts as long as the refusal does."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], StuckSession] = {}

    def flag(self, agent: str, session: str, reason: str, retry_after_s: int) -> None:
        moment = time.time()
        entry = self._entries.setdefault(
            (agent, session), StuckSession(agent, session, reason, moment, moment)
        )
        entry.reason = reason
        entry.until = moment + retry_after_s
        entry.refusals += 1

    def current(self) -> list[StuckSession]:
        moment = time.time()
        for key in [k for k, v in self._entries.items() if v.until < moment]:
            del self._entries[key]
        return list(self._entries.values())
