"""Pinned MCP tool definitions in the store (docs/answers-and-pins.md, "Pinned MCP tools").

One row per MCP tool (a configured tool) and tool name: the definition pinned (first seen,
or accepted by an operator) and the one last seen. `status` is `pinned` while they are the
same, `changed` once the server presents another, `rejected` once an operator refused it.
Every change is one conditional statement, so gateways sharing the store agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from gateway.store.database import Store
from gateway.store.schema import mcp_tool_pins as pins

PINNED, CHANGED, REJECTED = "pinned", "changed", "rejected"


@dataclass(frozen=True)
class Pin:
    tool: str
    name: str
    status: str
    pinned_digest: str
    pinned_definition: str
    pinned_at: str
    pinned_by: str
    seen_digest: str
    seen_definition: str
    seen_at: str

    def as_json(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "name": self.name,
            "status": self.status,
            "pinned": {"digest": self.pinned_digest, "at": self.pinned_at, "by": self.pinned_by},
            "seen": {"digest": self.seen_digest, "at": self.seen_at},
        }


class PinStore(Store):
    NAME = "pin"

    async def of_tool(self, tool: str) -> dict[str, Pin]:
        query = select(*pins.c).where(pins.c.tool == tool)
        rows = await self.run(lambda db: db.execute(query).all())
        return {row.name: Pin(*row) for row in rows}

    async def first_seen(self, tool: str, name: str, digest: str, definition: str, at: str) -> bool:
        """Pin a definition seen for the first time; False if the name had a row already."""
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        values = {
            "tool": tool,
            "name": name,
            "status": PINNED,
            "pinned_digest": digest,
            "pinned_definition": definition,
            "pinned_at": at,
            "pinned_by": "first seen",
            "seen_digest": digest,
            "seen_definition": definition,
            "seen_at": at,
        }
        statement = dialect.insert(pins).values(**values).on_conflict_do_nothing()
        return await self.run(lambda db: db.execute(statement).rowcount == 1)

    async def seen(self, pin: Pin, digest: str, definition: str, at: str) -> bool:
        """Record that the server now presents `digest` for the pin's name: `changed`, or
        back to `pinned` when it is the pinned one; False if another gateway was first."""
        status = PINNED if digest == pin.pinned_digest else CHANGED
        statement = (
            update(pins)
            .where(_is(pin))
            .values(status=status, seen_digest=digest, seen_definition=definition, seen_at=at)
        )
        return await self.run(lambda db: db.execute(statement).rowcount == 1)

    async def decide(
        self, tool: str, name: str, digest: str, accept: bool, by: str, at: str
    ) -> Pin | None:
        """Accept (pin) or reject the definition last seen, if it is still `digest`; None
        when there is no such change waiting."""

        def work(db: Connection) -> Pin | None:
            where = and_(
                pins.c.tool == tool,
                pins.c.name == name,
                pins.c.seen_digest == digest,
                pins.c.status.in_((CHANGED, REJECTED)),
            )
            values: dict[str, Any] = {"status": REJECTED}
            if accept:
                values = {
                    "status": PINNED,
                    "pinned_digest": pins.c.seen_digest,
                    "pinned_definition": pins.c.seen_definition,
                    "pinned_at": at,
                    "pinned_by": by,
                }
            if db.execute(update(pins).where(where).values(**values)).rowcount != 1:
                return None
            row = db.execute(select(*pins.c).where(pins.c.tool == tool, pins.c.name == name)).one()
            return Pin(*row)

        return await self.run(work)


def _is(pin: Pin) -> Any:
    """The pin's row as it was read: an update applies only if nobody changed it since."""
    return and_(
        pins.c.tool == pin.tool,
        pins.c.name == pin.name,
        pins.c.status == pin.status,
        pins.c.pinned_digest == pin.pinned_digest,
        pins.c.seen_digest == pin.seen_digest,
    )
