"""Kill switches in the store (SQLite or PostgreSQL): engaged ones are rows, lifting one
deletes its row.

Every worker reads the table at most a second apart (switches/board.py), so a
switch takes effect everywhere within a second and survives restarts.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite

from gateway.store.database import Store
from gateway.store.schema import switches


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
        query = select(
            switches.c.target, switches.c.reason, switches.c.engaged_by, switches.c.engaged_at
        ).order_by(switches.c.engaged_at)
        rows = await self.run(lambda db: db.execute(query).all())
        return [Switch(*row) for row in rows]

    async def engage(self, switch: Switch) -> None:
        """Engage `switch`, or replace the one engaged on its target."""
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        values = switch.as_json()
        statement = (
            dialect.insert(switches)
            .values(**values)
            .on_conflict_do_update(index_elements=[switches.c.target], set_=values)
        )
        await self.run(lambda db: db.execute(statement))

    async def lift(self, target: str) -> bool:
        statement = delete(switches).where(switches.c.target == target)
        return await self.run(lambda db: db.execute(statement).rowcount == 1)
