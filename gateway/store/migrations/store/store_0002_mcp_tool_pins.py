"""Pinned MCP tool definitions: the reviewed one and the one last seen, per tool and name.

Revision ID: store_0002
Revises: store_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "store_0002"
down_revision = "store_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mcp_tool_pins",
        sa.Column("tool", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("pinned_digest", sa.Text, nullable=False),
        sa.Column("pinned_definition", sa.Text, nullable=False),
        sa.Column("pinned_at", sa.Text, nullable=False),
        sa.Column("pinned_by", sa.Text, nullable=False),
        sa.Column("seen_digest", sa.Text, nullable=False),
        sa.Column("seen_definition", sa.Text, nullable=False),
        sa.Column("seen_at", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("mcp_tool_pins")
