"""The audit log as the releases before migrations made it, with the triggers that refuse
anything but appending a record at its end (per dialect: SQLite's and PostgreSQL's
trigger languages differ).

Revision ID: audit_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "audit_0001"
down_revision = None
branch_labels = None
depends_on = None

_SQLITE_TRIGGERS = (
    """CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE refused'); END""",
    """CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: DELETE refused'); END""",
    # INSERT OR REPLACE deletes without firing delete triggers: only appends get through.
    """CREATE TRIGGER audit_log_append_only BEFORE INSERT ON audit_log
WHEN NEW.seq <= (SELECT COALESCE(MAX(seq), 0) FROM audit_log)
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: records are only added at the end'); END""",
)

# A PostgreSQL trigger's WHEN cannot query the table: the append check is in its function.
# A row trigger sees the rows its statement inserted before it, so a batch is checked
# record by record. TRUNCATE, which fires no row trigger, is refused as well.
_POSTGRESQL_TRIGGERS = (
    """CREATE FUNCTION audit_log_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP; END $$""",
    """CREATE FUNCTION audit_log_append() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.seq <= (SELECT COALESCE(MAX(seq), 0) FROM audit_log) THEN
        RAISE EXCEPTION 'audit_log is append-only: records are only added at the end';
    END IF;
    RETURN NEW;
END $$""",
    """CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_refuse()""",
    """CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_refuse()""",
    """CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse()""",
    """CREATE TRIGGER audit_log_append_only BEFORE INSERT ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_append()""",
)


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column(
            "seq",
            sa.Integer().with_variant(sa.BigInteger(), "postgresql"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("time", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("request_id", sa.Text),
        sa.Column("record", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.Text, nullable=False),
        sa.Column("hash", sa.Text, nullable=False),
    )
    dialect = op.get_bind().dialect.name
    for statement in _POSTGRESQL_TRIGGERS if dialect == "postgresql" else _SQLITE_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    # Dropping the table drops its triggers.
    op.drop_table("audit_log")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION audit_log_refuse()")
        op.execute("DROP FUNCTION audit_log_append()")
