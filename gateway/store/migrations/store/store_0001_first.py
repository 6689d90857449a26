"""The store as the releases before migrations made it: actions, idempotency, switches.

Revision ID: store_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import DOUBLE_PRECISION

revision = "store_0001"
down_revision = None
branch_labels = None
depends_on = None

_UNIX_TIME: sa.types.TypeEngine[float] = sa.REAL().with_variant(DOUBLE_PRECISION(), "postgresql")
_COUNTER: sa.types.TypeEngine[int] = sa.Integer().with_variant(sa.BigInteger(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "actions",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("agent", sa.Text, nullable=False),
        sa.Column("tool", sa.Text, nullable=False),
        sa.Column("idempotency_key", sa.Text),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("expires_at", sa.Text, nullable=False),
        sa.Column("version", _COUNTER, nullable=False),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("result", sa.Text),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("lease_holder", sa.Text),
        sa.Column("lease_until", _UNIX_TIME),
    )
    has_key = sa.text("idempotency_key IS NOT NULL")
    op.create_index(
        "actions_idempotency",
        "actions",
        ["agent", "tool", "idempotency_key"],
        unique=True,
        sqlite_where=has_key,
        postgresql_where=has_key,
    )
    op.create_index("actions_state", "actions", ["state", "expires_at"])
    op.create_table(
        "idempotency",
        sa.Column("agent", sa.Text, primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("lease_until", _UNIX_TIME, nullable=False),
        sa.Column("expires_at", _UNIX_TIME, nullable=False),
        sa.Column("response", sa.Text),
        sa.Column("sent", sa.Integer, nullable=False, server_default=sa.text("0")),
    )
    op.create_table(
        "switches",
        sa.Column("target", sa.Text, primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("engaged_by", sa.Text, nullable=False),
        sa.Column("engaged_at", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("switches")
    op.drop_table("idempotency")
    op.drop_table("actions")
