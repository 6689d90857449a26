"""The kill switches in force, as every worker sees them (refreshed from the store every
second), and which of them covers a call."""

from __future__ import annotations

import asyncio
import logging

from gateway.headers import SAFE_METHODS
from gateway.switches.store import Switch, SwitchStore

log = logging.getLogger(__name__)

REFRESH_S = 1.0


class Switchboard:
    def __init__(self, store: SwitchStore) -> None:
        self.store = store
        self._engaged: dict[str, Switch] = {}

    @property
    def engaged(self) -> list[Switch]:
        return list(self._engaged.values())

    async def refresh(self) -> None:
        self._engaged = {switch.target: switch for switch in await self.store.all()}

    async def refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
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
