"""Kill switches in SQLite: engaged ones are rows, lifting one deletes its row.

Every worker reads the table at most a second apart (switches/board.py), so a
switch takes effect everywhere within a second and survives restarts.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.store.sqlite import Store


@dataclass(frozen=True)
class Switch:
    target: str  # all | read-only | agent:<id> | tool:<name> | agent:<id>,tool:<name>
    reason: str
    engaged_by: str
    engaged_at: str

    def as_json(self) -> dict[str, str]:
        return {
            "target": self.target,
            "reason": self.reason,
            "engaged_by": self.engaged_by,
            "engaged_at": self.engaged_at,
        }


class SwitchStore(Store):
    NAME = "switch"

    async def all(self) -> list[Switch]:
        rows = await self.db.execute_fetchall(
            "SELECT target, reason, engaged_by, engaged_at FROM switches ORDER BY engaged_at"
        )
        return [Switch(*row) for row in rows]

    async def engage(self, switch: Switch) -> None:
        await self.db.execute(
            "INSERT OR REPLACE INTO switches (target, reason, engaged_by, engaged_at) "
            "VALUES (?, ?, ?, ?)",
            (switch.target, switch.reason, switch.engaged_by, switch.engaged_at),
        )

    async def lift(self, target: str) -> bool:
        cursor = await self.db.execute("DELETE FROM switches WHERE target = ?", (target,))
        return cursor.rowcount == 1
