"""Calls in progress, per tool and per agent, each under its cap (see docs/limits.md, Connections
and fairness).

A slot is taken when the admit stage lets a call in and given back by the call's handler
once its answer has been sent, whatever happened. Both happen on the event loop thread
without awaiting in between, so counting needs no lock. Cannot fail.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import Gauge

TOOL = "tool"
AGENT = "agent"

Slot = tuple[str, str]  # (TOOL or AGENT, the tool's name or the agent's id)


class InFlight:
    def __init__(self, tool_gauge: Gauge) -> None:
        self._counts: dict[Slot, int] = {}
        self._tool_gauge = tool_gauge
        self._tool_children: dict[str, Any] = {}  # labels() looks up under a lock each time

    def count(self, kind: str, name: str) -> int:
        return self._counts.get((kind, name), 0)

    def take(self, wanted: Iterable[tuple[Slot, int]]) -> Slot | None:
        """Take every slot wanted, each under its cap: None; or, taking none of them, the
        first slot that is full."""
        wanted = list(wanted)
        for slot, cap in wanted:
            if self._counts.get(slot, 0) >= cap:
                return slot
        for slot, _cap in wanted:
            self._add(slot, 1)
        return None

    def give_back(self, slots: Iterable[Slot]) -> None:
        for slot in slots:
            self._add(slot, -1)

    def _add(self, slot: Slot, step: int) -> None:
        count = self._counts.get(slot, 0) + step
        if count:
            self._counts[slot] = count
        else:
            del self._counts[slot]
        kind, name = slot
        if kind == TOOL:
            child = self._tool_children.get(name)
            if child is None:
                child = self._tool_children[name] = self._tool_gauge.labels(name)
            child.set(count)
