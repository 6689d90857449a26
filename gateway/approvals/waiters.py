"""Calls held open (`Prefer: wait`) until their action ends: an event per action id."""

from __future__ import annotations

import asyncio
import contextlib


class Waiters:
    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def notify(self, action_id: str) -> None:
        event = self._events.pop(action_id, None)
        if event is not None:
            event.set()

    async def wait(self, action_id: str, timeout_s: float) -> None:
        """Until `notify(action_id)` or the timeout, whichever comes first."""
        event = self._events.setdefault(action_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await event.wait()
