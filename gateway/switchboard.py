"""The kill switches in force, as every worker sees them (refreshed from the store every
second), and which of them covers a call."""

from __future__ import annotations

import asyncio
import logging
import re

from gateway.store.switches import Switch, SwitchStore

log = logging.getLogger(__name__)

REFRESH_S = 1.0
# Methods that change nothing: the only ones `read-only` lets through.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_NAME = r"([A-Za-z0-9][A-Za-z0-9._-]*)"  # as agent ids and tool names are (config.py)
_TARGET = re.compile(rf"all|read-only|agent:{_NAME}|tool:{_NAME}|agent:{_NAME},tool:{_NAME}")


def check_target(target: str, agents: set[str] | None = None, tools: set[str] | None = None) -> str:
    """The target if it is well formed and (when `agents` and `tools` are given) names
    configured agents and tools. Engaging checks the names; lifting does not, so a switch
    left over for an agent or tool removed from the config can still be lifted.

    Raises ValueError with what is wrong.
    """
    match = _TARGET.fullmatch(target)  # not match(): `$` also matches before a newline
    if match is None:
        raise ValueError(
            "a switch target is all, read-only, agent:<id>, tool:<name> or agent:<id>,tool:<name>"
        )
    agent = match.group(1) or match.group(3)
    tool = match.group(2) or match.group(4)
    if agents is not None and agent is not None and agent not in agents:
        raise ValueError(f"no agent {agent!r} is configured")
    if tools is not None and tool is not None and tool not in tools:
        raise ValueError(f"no tool {tool!r} is configured")
    return target


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
