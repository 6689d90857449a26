"""Callers waiting for a stored row to change (a held call for its action, a repeat for
its Idempotency-Key): an event per name, set when this process changes the row."""

from __future__ import annotations

import asyncio
import contextlib


class Waiters:
    def __init__(self) -> None:
        # action id -> (its event, how many calls wait on it)
        self._events: dict[str, tuple[asyncio.Event, int]] = {}

    def notify(self, action_id: str) -> None:
        entry = self._events.pop(action_id, None)
        if entry is not None:
            entry[0].set()

    async def wait(self, action_id: str, timeout_s: float) -> None:
        """Until `notify(action_id)` or the timeout, whichever comes first."""
        event, count = self._events.get(action_id, (asyncio.Event(), 0))
        self._events[action_id] = (event, count + 1)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await event.wait()
        finally:
            current = self._events.get(action_id)
            if current is not None and current[0] is event:
                if current[1] <= 1:
                    del self._events[action_id]  # the last waiter leaves nothing behind
                else:
                    self._events[action_id] = (event, current[1] - 1)
