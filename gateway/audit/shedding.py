"""Refused calls counted per agent, or per client address while no agent is known, and
whether each still gets an audit record of its own (see docs/limits.md, Refusals).

In a window of `protection.refusals.window_s` per key, the first `limit` refusals are
recorded one by one as before; the rest are only counted, and the window's count goes to
the audit log as one `refusals_shed` record (the agent or client, how many, which codes)
once the window is over, or when the gateway stops. The agent still gets every refusal:
only the writing is shed. A refusal is an error code of status 4xx (whatever the status
of the answer carrying it: MCP refusals are JSON-RPC errors), or 503 `tool_busy`, given
before the call's intent was recorded. Cannot fail; memory is one small entry per key
seen in the last window.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any

from gateway.audit.events import event, iso
from gateway.config import RefusalLimit
from gateway.errors import SPECS, ErrorCode

AGENT = "agent"
CLIENT = "client"

# Refusals whose records may be shed: the agent's own doing (4xx, whatever the status of
# the answer that carries them, as MCP refusals are JSON-RPC errors), or load being shed.
SHEDDABLE = frozenset(code.value for code, spec in SPECS.items() if 400 <= spec.status < 500) | {
    ErrorCode.TOOL_BUSY.value
}


@dataclass(slots=True)
class _Window:
    began: float  # time.monotonic()
    began_at: float  # time.time(), for the record
    recorded: int = 0
    codes: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def shed(self) -> int:
        return sum(self.codes.values())


class Refusals:
    def __init__(self, config: RefusalLimit) -> None:
        self._limit = config.limit
        self._window_s = config.window_s
        self._windows: dict[tuple[str, str], _Window] = {}

    def count(self, by: str, who: str, code: str) -> tuple[bool, list[dict[str, Any]]]:
        """Count one refusal of `who` (an agent id, or a client address when `by` is
        CLIENT): whether it gets its own record, and the summary records now due."""
        moment = time.monotonic()
        key = (by, who)
        due = []
        window = self._windows.get(key)
        if window is not None and moment - window.began >= self._window_s:
            due.extend(self._summaries([key]))
            window = None
        if window is None:
            window = self._windows[key] = _Window(moment, time.time())
        if window.recorded < self._limit:
            window.recorded += 1
            return True, due
        window.codes[code] += 1
        return False, due

    def due(self, *, all_of_them: bool = False) -> list[dict[str, Any]]:
        """Summaries of the windows that are over (every window: `all_of_them`), which
        are forgotten."""
        moment = time.monotonic()
        over = [
            key
            for key, window in self._windows.items()
            if all_of_them or moment - window.began >= self._window_s
        ]
        return self._summaries(over)

    def _summaries(self, keys: list[tuple[str, str]]) -> list[dict[str, Any]]:
        records = []
        for key in keys:
            window = self._windows.pop(key)
            if window.shed:
                by, who = key
                records.append(
                    event(
                        "refusals_shed",
                        **{by: who},
                        count=window.shed,
                        codes=dict(sorted(window.codes.items())),
                        window_start=iso(window.began_at),
                        window_s=self._window_s,
                        recorded=window.recorded,
                    )
                )
        return records
