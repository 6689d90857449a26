"""Reaching into a store's database from a test, on SQLite or PostgreSQL alike."""

from __future__ import annotations

from sqlalchemy import text

from gateway.store.database import Store


async def execute(store: Store, sql: str) -> None:
    """Run one statement (such as ending every lease) on the store's database."""
    await store.run(lambda db: db.execute(text(sql)))
