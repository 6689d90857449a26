"""Callers waiting for a stored row to change (a held call for its action, a repeat for
its Idempotency-Key): an event per name, set when this process changes the row, or when
another process sharing the PostgreSQL store says it did (`notices`)."""

from __future__ import annotations

import asyncio
import contextlib
import time

from gateway.store.notices import WAITER, Notices

# How long a wake-up is remembered, for a caller that read the row just before it and
# waits just after: it then waits no longer (see `wait`'s `since`).
_REMEMBERED_S = 10.0


class Waiters:
    def __init__(self, notices: Notices | None = None) -> None:
        # name -> (its event, how many calls wait on it)
        self._events: dict[str, tuple[asyncio.Event, int]] = {}
        self._woken: dict[str, float] = {}  # name -> when it was last woken, oldest first
        self.notices = notices
        if notices is not None:
            notices.subscribe(WAITER, self.wake, self.wake_all)

    def notify(self, name: str) -> None:
        """The row of `name` changed: wake its waiters here and in the other processes."""
        self.wake(name)
        if self.notices is not None:
            self.notices.send(WAITER + name)

    def wake(self, name: str) -> None:
        """Wake the waiters of `name` in this process only."""
        now = time.monotonic()
        self._woken.pop(name, None)
        self._woken[name] = now
        while self._woken:
            oldest = next(iter(self._woken))
            if self._woken[oldest] > now - _REMEMBERED_S:
                break
            del self._woken[oldest]
        entry = self._events.pop(name, None)
        if entry is not None:
            entry[0].set()

    def wake_all(self) -> None:
        """Every waiter re-reads its row (notices may have been missed)."""
        events, self._events = self._events, {}
        for event, _count in events.values():
            event.set()

    def poll_s(self, fast_s: float) -> float:
        """How long to wait before re-reading a row that is re-read every `fast_s` when
        nothing else says it changed: longer while notices from other processes arrive."""
        return fast_s if self.notices is None else self.notices.poll_s(fast_s)

    async def wait(self, name: str, timeout_s: float, since: float | None = None) -> None:
        """Until `notify(name)` or the timeout, whichever comes first; at once if it was
        woken after `since` (a `time.monotonic()` taken before the caller read its row)."""
        if since is not None and self._woken.get(name, since) > since:
            return
        event, count = self._events.get(name, (asyncio.Event(), 0))
        self._events[name] = (event, count + 1)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await event.wait()
        finally:
            current = self._events.get(name)
            if current is not None and current[0] is event:
                if current[1] <= 1:
                    del self._events[name]  # the last waiter leaves nothing behind
                else:
                    self._events[name] = (event, current[1] - 1)
