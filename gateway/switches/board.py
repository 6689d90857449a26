"""The kill switches in force, as every worker sees them (refreshed from the store every
second, or at once when another process sharing a PostgreSQL store says they changed),
and which of them covers a call."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway.headers import SAFE_METHODS
from gateway.store.notices import SWITCHES, Notices
from gateway.switches.store import Switch, SwitchStore

log = logging.getLogger(__name__)

REFRESH_S = 1.0  # without notices; with them, `Notices.poll_s` says


class Switchboard:
    def __init__(self, store: SwitchStore, notices: Notices | None = None) -> None:
        self.store = store
        self.notices = notices
        self._engaged: dict[str, Switch] = {}
        self._due = asyncio.Event()
        if notices is not None:
            notices.subscribe(SWITCHES, lambda _rest: self._due.set(), self._due.set)

    @property
    def engaged(self) -> list[Switch]:
        return list(self._engaged.values())

    async def engage(self, switch: Switch) -> None:
        """Engage `switch` (replacing the one on its target) in every process."""
        await self.store.engage(switch)
        await self._changed()

    async def lift(self, target: str) -> bool:
        """Lift the switch on `target` in every process; False if none was engaged."""
        lifted = await self.store.lift(target)
        if lifted:
            await self._changed()
        return lifted

    async def _changed(self) -> None:
        await self.refresh()
        if self.notices is not None:
            self.notices.send(SWITCHES)

    async def refresh(self) -> None:
        self._engaged = {switch.target: switch for switch in await self.store.all()}

    async def refresh_forever(self) -> None:
        while True:
            every_s = REFRESH_S if self.notices is None else self.notices.poll_s(REFRESH_S)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every_s):
                    await self._due.wait()
            self._due.clear()  # a notice heard while reading comes round again
            try:
                await self.refresh()
            except Exception:  # keep the last known switches: they stay in force
                log.exception("cannot read the kill switches; keeping the last known ones")

    def covering(self, agent: str | None, tool: str | None, method: str) -> Switch | None:
        """The switch that stops this call, if any (the broadest first)."""
        if not self._engaged:
            return None
        engaged = self._engaged
        for target in (
            "all",
            f"agent:{agent}",
            f"tool:{tool}",
            f"agent:{agent},tool:{tool}",
        ):
            if target in engaged:
                return engaged[target]
        if method not in SAFE_METHODS and "read-only" in engaged:
            return engaged["read-only"]
        return None
