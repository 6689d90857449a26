"""The tables of callgate's two databases, as SQLAlchemy Core, for SQLite and PostgreSQL.

The store (`storage.url`) holds pending actions, idempotency keys and kill switches; the
audit log (`audit.url`) is a database of its own, so that it can be archived and restarted
without touching the store. The migrations (gateway/store/migrations/, run by
gateway/store/migrate.py) build exactly these tables, and a test holds them to it; the
audit log's append-only triggers differ per dialect and live in its migrations only.
"""

from __future__ import annotations

from sqlalchemy import (
    REAL,
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import DOUBLE_PRECISION
from sqlalchemy.types import TypeEngine

# Unix time with its fractions: REAL is 8 bytes in SQLite but 4 in PostgreSQL.
UnixTime: TypeEngine[float] = REAL().with_variant(DOUBLE_PRECISION(), "postgresql")
# A count that outgrows 32 bits on PostgreSQL; in SQLite only INTEGER is the rowid.
Counter: TypeEngine[int] = Integer().with_variant(BigInteger(), "postgresql")

STORE = MetaData()

actions = Table(
    "actions",
    STORE,
    Column("id", Text, primary_key=True),
    Column("state", Text, nullable=False),
    Column("agent", Text, nullable=False),
    Column("tool", Text, nullable=False),
    Column("idempotency_key", Text),
    Column("created_at", Text, nullable=False),
    Column("expires_at", Text, nullable=False),
    Column("version", Counter, nullable=False),
    Column("document", Text, nullable=False),
    Column("result", Text),
    Column("body", LargeBinary, nullable=False),
    Column("lease_holder", Text),
    Column("lease_until", UnixTime),
)
Index(
    "actions_idempotency",
    actions.c.agent,
    actions.c.tool,
    actions.c.idempotency_key,
    unique=True,
    sqlite_where=actions.c.idempotency_key.is_not(None),
    postgresql_where=actions.c.idempotency_key.is_not(None),
)
Index("actions_state", actions.c.state, actions.c.expires_at)

idempotency = Table(
    "idempotency",
    STORE,
    Column("agent", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("fingerprint", Text, nullable=False),
    Column("owner", Text, nullable=False),
    Column("lease_until", UnixTime, nullable=False),
    Column("expires_at", UnixTime, nullable=False),
    Column("response", Text),
    Column("sent", Integer, nullable=False, server_default=text("0")),
)

switches = Table(
    "switches",
    STORE,
    Column("target", Text, primary_key=True),
    Column("reason", Text, nullable=False),
    Column("engaged_by", Text, nullable=False),
    Column("engaged_at", Text, nullable=False),
)

# MCP tool definitions as reviewed (docs/answers-and-pins.md, "Pinned MCP tools"): per
# tool and name, the pinned definition and the one last seen, while it differs.
mcp_tool_pins = Table(
    "mcp_tool_pins",
    STORE,
    Column("tool", Text, primary_key=True),
    Column("name", Text, primary_key=True),
    Column("status", Text, nullable=False),  # pinned | changed | rejected
    Column("pinned_digest", Text, nullable=False),
    Column("pinned_definition", Text, nullable=False),
    Column("pinned_at", Text, nullable=False),
    Column("pinned_by", Text, nullable=False),
    Column("seen_digest", Text, nullable=False),
    Column("seen_definition", Text, nullable=False),
    Column("seen_at", Text, nullable=False),
)

# Tables of revisions after the first: a file adopted at the first revision (below) gets
# them from its migrations, not from this module.
AFTER_FIRST_REVISION = frozenset({"mcp_tool_pins"})

# Columns the releases before migrations added to a file when they opened it; a file from
# before they existed is given them when it is adopted (gateway/store/migrate.py).
ADDED_BEFORE_MIGRATIONS = {
    "actions": ("lease_holder", "lease_until"),
    "idempotency": ("sent",),
}

AUDIT = MetaData()

# No index besides seq: one costs ~9 µs per record on the hot path, and exports, which
# filter on time, agent or tool, are batch jobs that can afford a scan.
audit_log = Table(
    "audit_log",
    AUDIT,
    # The writer numbers the records itself (gateway/audit/chain.py).
    Column("seq", Counter, primary_key=True, autoincrement=False),
    Column("time", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("request_id", Text),
    Column("record", Text, nullable=False),
    Column("prev_hash", Text, nullable=False),
    Column("hash", Text, nullable=False),
)

# The triggers that refuse anything but appending to audit_log, on either dialect.
AUDIT_TRIGGERS = ("audit_log_no_update", "audit_log_no_delete", "audit_log_append_only")
