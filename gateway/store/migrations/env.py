"""Alembic's environment for callgate's migrations, run by gateway/store/migrate.py only:
it hands over a connection already in the transaction that the whole upgrade is."""

from __future__ import annotations

from alembic import context

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=context.config.attributes["metadata"],
    version_table=context.config.attributes["version_table"],
)
with context.begin_transaction():
    context.run_migrations()
