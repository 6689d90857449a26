"""Reading the audit log back: export as JSON Lines, and following new records."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from gateway.audit.chain import Database

_COLUMNS = "seq, record, prev_hash, hash"


def as_utc(moment: str) -> str:
    """An ISO 8601 date or time (a zone offset is honoured, none means UTC) in the form of
    the records' `time`, so that the two compare as strings."""
    try:
        parsed = datetime.fromisoformat(moment)
    except ValueError:
        raise ValueError(f"{moment!r} is not an ISO 8601 date or time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def line(record: str, prev_hash: str, digest: str) -> str:
    """One JSON Lines entry: the sealed record plus its links, so a SIEM can re-check them."""
    entry = json.loads(record)
    entry["prev_hash"] = prev_hash
    entry["hash"] = digest
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


def export(
    db: Database,
    *,
    since: str | None = None,
    until: str | None = None,
    agent: str | None = None,
    tool: str | None = None,
) -> Iterator[str]:
    """Matching records in chain order; `since` is inclusive, `until` exclusive.

    Agent and tool are matched on the records read (the table has no column for them, and
    each dialect spells a JSON lookup its own way): an export is a batch job that can afford
    the scan."""
    where, params = [], []
    for clause, value in (
        ("time >= ?", since and as_utc(since)),
        ("time < ?", until and as_utc(until)),
    ):
        if value is not None:
            where.append(clause)
            params.append(value)
    query = f"SELECT {_COLUMNS} FROM audit_log"
    if where:
        query += " WHERE " + " AND ".join(where)
    wanted = {key: value for key, value in (("agent", agent), ("tool", tool)) if value is not None}
    for _seq, record, prev_hash, digest in db.execute(query + " ORDER BY seq", params):
        entry = line(record, prev_hash, digest)
        if not wanted or all(json.loads(record).get(k) == v for k, v in wanted.items()):
            yield entry


def follow(db: Database, last: int, interval_s: float) -> Iterator[str]:
    """The last `last` records, then every new one as it is committed; never ends."""
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM audit_log ORDER BY seq DESC LIMIT ?", (last,)
    ).fetchall()
    seen = rows[0][0] if rows else 0
    for _seq, record, prev_hash, digest in reversed(rows):
        yield line(record, prev_hash, digest)
    if not rows:
        seen = db.execute("SELECT COALESCE(MAX(seq), 0) FROM audit_log").fetchone()[0]
    while True:
        rows = db.execute(
            f"SELECT {_COLUMNS} FROM audit_log WHERE seq > ? ORDER BY seq", (seen,)
        ).fetchall()
        for seq, record, prev_hash, digest in rows:
            seen = seq
            yield line(record, prev_hash, digest)
        if not rows:
            time.sleep(interval_s)
