"""The hash chain (gateway/audit/chain.py) on real SQLite files: the triggers, `verify` on
intact, tampered, incomplete and continued logs.

Logs are built with the gateway's own `seal()` and `insert_sql()`; tampering drops the
triggers that stand in its way, as someone with write access to the file could.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.chain import (
    CONTINUED,
    GENESIS,
    Broken,
    Row,
    canonical,
    chain_hash,
    insert_sql,
    start_after,
    verify,
)
from gateway.audit.events import event
from tests.support.audit_chain import (
    append,
    call,
    calls,
    drop_triggers,
    forge_in_middle,
    open_log,
    write_log,
)


def table(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
    return db.execute("SELECT * FROM audit_log ORDER BY seq").fetchall()


@pytest.fixture
def log(tmp_path: Path) -> Iterator[tuple[sqlite3.Connection, list[Row]]]:
    """An intact log of 6 records (two complete calls) and its rows."""
    db = open_log(tmp_path / "audit.db")
    rows = append(db, calls(6))
    yield db, rows
    db.close()


# --- intact chains ------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 3, 7], ids=["one-record", "three-records", "seven-records"])
def test_intact_chain_verifies(tmp_path: Path, count: int) -> None:
    db = open_log(tmp_path / "audit.db")
    rows = append(db, calls(count))
    report = verify(db)
    db.close()
    assert report.broken is None
    assert report.records == count
    assert report.last_seq == count
    assert report.head == rows[-1][6]
    assert report.continues_from is None
    assert report.incomplete == []


def test_chain_built_in_several_appends_verifies(tmp_path: Path) -> None:
    db = open_log(tmp_path / "audit.db")
    append(db, calls(2))
    append(db, calls(3))
    rows = append(db, calls(1))
    report = verify(db)
    db.close()
    assert (report.broken, report.records, report.head) == (None, 6, rows[-1][6])


def test_empty_table_verifies_with_genesis_head(tmp_path: Path) -> None:
    db = open_log(tmp_path / "audit.db")
    report = verify(db)
    db.close()
    assert (report.broken, report.records, report.last_seq) == (None, 0, 0)
    assert report.head == GENESIS == "0" * 64


def test_sealed_rows_hold_the_canonical_record_and_its_links(tmp_path: Path) -> None:
    rows = write_log(tmp_path / "audit.db", calls(3))
    prev = GENESIS
    for position, (seq, time, kind, request_id, text, link, digest) in enumerate(rows, start=1):
        record = json.loads(text)
        assert seq == record["seq"] == position
        assert (time, kind, request_id) == (record["time"], record["kind"], record["request_id"])
        assert text == json.dumps(record, sort_keys=True, separators=(",", ":"))
        assert link == prev
        assert digest == chain_hash(text, link)
        prev = digest


# --- triggers -----------------------------------------------------------------------

_ROW_2 = "(2, 't', 'decision', 'r1', '{}', 'p', 'h')"


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        pytest.param(
            "UPDATE audit_log SET kind = 'outcome' WHERE seq = 2",
            "audit_log is append-only: UPDATE refused",
            id="update",
        ),
        pytest.param(
            "UPDATE audit_log SET seq = 100 WHERE seq = 6",
            "audit_log is append-only: UPDATE refused",
            id="update-seq-of-last",
        ),
        pytest.param(
            "DELETE FROM audit_log WHERE seq = 2",
            "audit_log is append-only: DELETE refused",
            id="delete",
        ),
        pytest.param(
            "DELETE FROM audit_log WHERE seq = 6",
            "audit_log is append-only: DELETE refused",
            id="delete-last",
        ),
        pytest.param(
            f"INSERT OR REPLACE INTO audit_log VALUES {_ROW_2}",
            "audit_log is append-only: records are only added at the end",
            id="insert-or-replace",
        ),
        pytest.param(
            f"REPLACE INTO audit_log VALUES {_ROW_2.replace('(2,', '(6,')}",
            "audit_log is append-only: records are only added at the end",
            id="replace-last",
        ),
        pytest.param(
            f"INSERT INTO audit_log VALUES {_ROW_2} ON CONFLICT(seq) DO UPDATE SET kind = 'x'",
            "audit_log is append-only: records are only added at the end",
            id="upsert",
        ),
        pytest.param(
            f"INSERT OR IGNORE INTO audit_log VALUES {_ROW_2}",
            "audit_log is append-only: records are only added at the end",
            id="insert-or-ignore",
        ),
    ],
)
def test_triggers_refuse_changes(
    log: tuple[sqlite3.Connection, list[Row]], statement: str, message: str
) -> None:
    db, _ = log
    before = table(db)
    with pytest.raises(sqlite3.IntegrityError, match=f"^{message}$"):
        db.execute(statement)
    assert table(db) == before
    assert verify(db).records == 6


def test_trigger_refuses_insert_below_the_last_seq_into_a_gap(tmp_path: Path) -> None:
    db = open_log(tmp_path / "audit.db")
    row = ("t", "decision", "r1", "{}", "p", "h")
    db.execute(insert_sql(1), (1, *row))
    db.execute(insert_sql(1), (10, *row))  # past the end: allowed
    with pytest.raises(
        sqlite3.IntegrityError,
        match=r"^audit_log is append-only: records are only added at the end$",
    ):
        db.execute(insert_sql(1), (5, *row))
    assert [seq for (seq,) in db.execute("SELECT seq FROM audit_log ORDER BY seq")] == [1, 10]
    db.close()


def test_triggers_let_appends_through(log: tuple[sqlite3.Connection, list[Row]]) -> None:
    db, _ = log
    rows = append(db, calls(2))
    assert [row[0] for row in rows] == [7, 8]
    report = verify(db)
    assert (report.broken, report.records, report.head) == (None, 8, rows[-1][6])


# --- tampering ----------------------------------------------------------------------

Tamper = Callable[[sqlite3.Connection], None]


def _record(db: sqlite3.Connection, seq: int) -> dict[str, Any]:
    (text,) = db.execute("SELECT record FROM audit_log WHERE seq = ?", (seq,)).fetchone()
    record: dict[str, Any] = json.loads(text)
    return record


def edit_field(db: sqlite3.Connection) -> None:
    drop_triggers(db, "audit_log_no_update")
    record = _record(db, 3)
    record["agent"] = "mallory"
    db.execute("UPDATE audit_log SET record = ? WHERE seq = 3", (canonical(record),))


def edit_column(column: str, value: str) -> Tamper:
    def tamper(db: sqlite3.Connection) -> None:
        drop_triggers(db, "audit_log_no_update")
        db.execute(f"UPDATE audit_log SET {column} = ? WHERE seq = 3", (value,))

    return tamper


def edit_into_bad_json(db: sqlite3.Connection) -> None:
    """Replace record 3 with text that is not JSON, hashed so that only the JSON is wrong."""
    drop_triggers(db, "audit_log_no_update")
    text = "not json"
    db.execute(
        "UPDATE audit_log SET record = ?, hash = ? WHERE seq = 3",
        (text, chain_hash(text, _record_link(db, 3))),
    )


def _record_link(db: sqlite3.Connection, seq: int) -> str:
    (link,) = db.execute("SELECT prev_hash FROM audit_log WHERE seq = ?", (seq,)).fetchone()
    return str(link)


def edit_and_rehash(db: sqlite3.Connection) -> None:
    """Edit record 3 and recompute its own hash: the break shows at record 4's link."""
    drop_triggers(db, "audit_log_no_update")
    record = _record(db, 3)
    record["agent"] = "mallory"
    text = canonical(record)
    db.execute(
        "UPDATE audit_log SET record = ?, hash = ? WHERE seq = 3",
        (text, chain_hash(text, _record_link(db, 3))),
    )


def delete(*seqs: int) -> Tamper:
    def tamper(db: sqlite3.Connection) -> None:
        drop_triggers(db, "audit_log_no_delete")
        for seq in seqs:
            db.execute("DELETE FROM audit_log WHERE seq = ?", (seq,))

    return tamper


def swap(a: int, b: int) -> Tamper:
    """Exchange the contents of rows `a` and `b`, leaving the seq column in place."""

    def tamper(db: sqlite3.Connection) -> None:
        drop_triggers(db, "audit_log_no_update")
        columns = "time, kind, request_id, record, prev_hash, hash"
        query = f"SELECT {columns} FROM audit_log WHERE seq = ?"
        row_a, row_b = (db.execute(query, (seq,)).fetchone() for seq in (a, b))
        update = (
            "UPDATE audit_log SET time = ?, kind = ?, request_id = ?, record = ?, "
            "prev_hash = ?, hash = ? WHERE seq = ?"
        )
        db.execute(update, (*row_b, a))
        db.execute(update, (*row_a, b))

    return tamper


def forge_at_end(db: sqlite3.Connection) -> None:
    """Append (triggers on) a self-consistent record that links to no record of the log."""
    forged = call("decision", "forged", agent="mallory")
    forged["seq"] = 7
    text = canonical(forged)
    link = chain_hash("some other chain", GENESIS)
    db.execute(
        insert_sql(1), (7, forged["time"], "decision", "forged", text, link, chain_hash(text, link))
    )


def forge_first(db: sqlite3.Connection) -> None:
    """Replace record 1 with one that is self-consistent but does not follow GENESIS."""
    drop_triggers(db, "audit_log_no_update")
    text = canonical(_record(db, 1))
    link = chain_hash("some other chain", GENESIS)
    db.execute(
        "UPDATE audit_log SET prev_hash = ?, hash = ? WHERE seq = 1",
        (link, chain_hash(text, link)),
    )


TAMPERS = [
    pytest.param(
        edit_field, Broken(3, "edited", "its contents do not match its hash"), id="edited-record"
    ),
    pytest.param(
        edit_column("kind", "decision"),
        Broken(3, "edited", "its time, kind or request_id columns differ from its sealed record"),
        id="edited-kind-column",
    ),
    pytest.param(
        edit_column("time", "2020-01-01T00:00:00.000000Z"),
        Broken(3, "edited", "its time, kind or request_id columns differ from its sealed record"),
        id="edited-time-column",
    ),
    pytest.param(
        edit_column("request_id", "r9"),
        Broken(3, "edited", "its time, kind or request_id columns differ from its sealed record"),
        id="edited-request-id-column",
    ),
    pytest.param(
        edit_column("prev_hash", GENESIS),
        Broken(3, "edited", "its contents do not match its hash"),
        id="edited-prev-hash-column",
    ),
    pytest.param(
        edit_into_bad_json,
        Broken(3, "edited", "its record is not valid JSON"),
        id="edited-into-bad-json",
    ),
    pytest.param(
        edit_and_rehash,
        Broken(
            4,
            "inserted",
            "record 4 does not link to record 3: it was forged, or the record before it was replaced",
        ),
        id="edited-and-rehashed",
    ),
    pytest.param(
        delete(3), Broken(4, "deleted", "record 3 is missing before record 4"), id="deleted-one"
    ),
    pytest.param(
        delete(3, 4),
        Broken(5, "deleted", "records 3 to 4 are missing before record 5"),
        id="deleted-two",
    ),
    pytest.param(
        delete(1),
        Broken(2, "deleted", "record 1 is missing from the start"),
        id="deleted-first",
    ),
    pytest.param(
        delete(1, 2),
        Broken(3, "deleted", "the records before record 3 are missing from the start"),
        id="deleted-first-two",
    ),
    pytest.param(
        swap(3, 4), Broken(3, "reordered", "record 4 comes before record 3"), id="reordered"
    ),
    pytest.param(
        swap(2, 5), Broken(2, "reordered", "record 5 comes before record 2"), id="reordered-far"
    ),
    pytest.param(
        forge_in_middle,
        Broken(4, "inserted", "record 4 links to record 3: what comes between was added later"),
        id="inserted-middle",
    ),
    pytest.param(
        forge_first,
        Broken(1, "inserted", "the first record does not start the chain"),
        id="inserted-first",
    ),
    pytest.param(
        forge_at_end,
        Broken(
            7,
            "inserted",
            "record 7 does not link to record 6: it was forged, or the record before it was replaced",
        ),
        id="inserted-at-end",
    ),
]


@pytest.mark.parametrize(("tamper", "expected"), TAMPERS)
def test_tampering_is_detected_and_named(
    log: tuple[sqlite3.Connection, list[Row]], tamper: Tamper, expected: Broken
) -> None:
    db, _ = log
    tamper(db)
    assert verify(db).broken == expected


def _intact_before(db: sqlite3.Connection, position: int) -> int:
    (count,) = db.execute("SELECT COUNT(*) FROM audit_log WHERE seq < ?", (position,)).fetchone()
    return int(count)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(
            p.values[0],
            id=p.id,
        )
        for p in TAMPERS
    ],
)
def test_records_counts_the_intact_records_before_the_break(
    log: tuple[sqlite3.Connection, list[Row]], tamper: Tamper
) -> None:
    db, _ = log
    tamper(db)
    report = verify(db)
    assert report.broken is not None
    assert report.records == _intact_before(db, report.broken.seq)


def test_verify_stops_at_the_first_broken_record(
    log: tuple[sqlite3.Connection, list[Row]],
) -> None:
    db, rows = log
    drop_triggers(db, "audit_log_no_update", "audit_log_no_delete")
    db.execute("UPDATE audit_log SET kind = 'outcome' WHERE seq = 5")
    db.execute("DELETE FROM audit_log WHERE seq = 6")
    db.execute("UPDATE audit_log SET record = '{}' WHERE seq = 2")
    report = verify(db)
    assert report.broken == Broken(2, "edited", "its contents do not match its hash")
    assert report.records == 1
    assert report.head == rows[0][6]


def test_verify_names_only_the_first_of_later_breaks(
    log: tuple[sqlite3.Connection, list[Row]],
) -> None:
    db, _ = log
    swap(4, 5)(db)
    delete(2)(db)
    report = verify(db)
    assert report.broken == Broken(3, "deleted", "record 2 is missing before record 3")
    assert report.records == 1


# --- incomplete calls ---------------------------------------------------------------


def test_intent_without_outcome_is_incomplete(tmp_path: Path) -> None:
    db = open_log(tmp_path / "audit.db")
    rows = append(
        db,
        [
            call("decision", "r1"),
            call("intent", "r1"),
            call("decision", "r2"),
            call("intent", "r2"),
            call("outcome", "r2"),
            call("decision", "r3"),  # a refused call: no intent, nothing pending
            event("gateway_started", version="0.1.0"),
        ],
    )
    report = verify(db)
    db.close()
    assert report.broken is None
    assert report.records == 7
    assert report.incomplete == [json.loads(rows[1][4])]
    assert report.incomplete[0]["request_id"] == "r1"


def test_every_intent_with_an_outcome_leaves_nothing_incomplete(tmp_path: Path) -> None:
    db = open_log(tmp_path / "audit.db")
    append(db, [call("intent", "r1"), call("intent", "r2"), call("outcome", "r2")])
    append(db, [call("outcome", "r1")])
    report = verify(db)
    db.close()
    assert (report.broken, report.records, report.incomplete) == (None, 4, [])


def test_incomplete_calls_are_listed_in_log_order(tmp_path: Path) -> None:
    db = open_log(tmp_path / "audit.db")
    rows = append(
        db,
        [call("intent", "r1"), call("intent", "r2"), call("intent", "r3"), call("outcome", "r2")],
    )
    report = verify(db)
    db.close()
    assert [r["request_id"] for r in report.incomplete] == ["r1", "r3"]
    assert report.incomplete == [json.loads(rows[0][4]), json.loads(rows[2][4])]


# --- continuation -------------------------------------------------------------------


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, list[Row]]:
    path = tmp_path / "archive.db"
    return path, write_log(path, calls(5))


def _continue(archive: Path, new: Path) -> sqlite3.Connection:
    old = sqlite3.connect(archive)
    report = verify(old)
    old.close()
    assert report.broken is None
    db = open_log(new)
    start_after(db, report, archive.name)
    return db


def test_continued_log_verifies_and_links_to_the_archive_head(
    tmp_path: Path, archive: tuple[Path, list[Row]]
) -> None:
    archive_path, archive_rows = archive
    db = _continue(archive_path, tmp_path / "new.db")
    report = verify(db)
    first = table(db)[0]
    db.close()
    archive_head = archive_rows[-1][6]
    assert report.broken is None
    assert report.continues_from == archive_head
    assert (report.records, report.last_seq, report.head) == (1, 6, first[6])
    record = json.loads(first[4])
    assert first[0] == record["seq"] == 6
    assert first[2] == record["kind"] == CONTINUED
    assert first[5] == archive_head
    assert (record["previous_head"], record["previous_seq"], record["previous_file"]) == (
        archive_head,
        5,
        "archive.db",
    )


def test_continued_log_takes_further_records(
    tmp_path: Path, archive: tuple[Path, list[Row]]
) -> None:
    archive_path, archive_rows = archive
    db = _continue(archive_path, tmp_path / "new.db")
    rows = append(db, calls(3))
    report = verify(db)
    db.close()
    assert [row[0] for row in rows] == [7, 8, 9]
    assert report.broken is None
    assert (report.records, report.last_seq, report.head) == (4, 9, rows[-1][6])
    assert report.continues_from == archive_rows[-1][6]


def test_continuing_a_continued_log(tmp_path: Path, archive: tuple[Path, list[Row]]) -> None:
    archive_path, _ = archive
    second = tmp_path / "second.db"
    db = _continue(archive_path, second)
    rows = append(db, calls(3))
    db.close()
    db = _continue(second, tmp_path / "third.db")
    report = verify(db)
    first = table(db)[0]
    db.close()
    assert report.broken is None
    assert report.continues_from == rows[-1][6]
    assert (report.records, report.last_seq) == (1, 10)
    record = json.loads(first[4])
    assert (record["previous_head"], record["previous_seq"], record["previous_file"]) == (
        rows[-1][6],
        9,
        "second.db",
    )


def test_start_after_refuses_a_log_with_records(
    tmp_path: Path, archive: tuple[Path, list[Row]]
) -> None:
    archive_path, _ = archive
    new = tmp_path / "new.db"
    rows = write_log(new, calls(2))
    with pytest.raises(ValueError, match=r"^the new audit log is not empty$"):
        _continue(archive_path, new)
    db = sqlite3.connect(new)
    assert table(db) == [tuple(row) for row in rows]
    db.close()


def _tamper_previous_head(rehash: bool) -> Tamper:
    def tamper(db: sqlite3.Connection) -> None:
        drop_triggers(db, "audit_log_no_update")
        (seq,) = db.execute("SELECT MIN(seq) FROM audit_log").fetchone()
        record = _record(db, seq)
        record["previous_head"] = chain_hash("another archive", GENESIS)
        text = canonical(record)
        db.execute("UPDATE audit_log SET record = ? WHERE seq = ?", (text, seq))
        if rehash:
            link = _record_link(db, seq)
            db.execute("UPDATE audit_log SET hash = ? WHERE seq = ?", (chain_hash(text, link), seq))

    return tamper


@pytest.mark.parametrize(
    ("rehash", "expected"),
    [
        pytest.param(
            False, Broken(6, "edited", "its contents do not match its hash"), id="not-rehashed"
        ),
        pytest.param(
            True,
            Broken(6, "deleted", "the records before record 6 are missing from the start"),
            id="rehashed",
        ),
    ],
)
def test_continued_log_with_a_tampered_previous_head_is_broken(
    tmp_path: Path, archive: tuple[Path, list[Row]], rehash: bool, expected: Broken
) -> None:
    archive_path, _ = archive
    db = _continue(archive_path, tmp_path / "new.db")
    append(db, calls(2))
    _tamper_previous_head(rehash)(db)
    report = verify(db)
    db.close()
    assert report.broken == expected
    assert report.records == 0
    assert report.continues_from is None


def test_continued_log_without_its_first_record_is_broken(
    tmp_path: Path, archive: tuple[Path, list[Row]]
) -> None:
    archive_path, _ = archive
    db = _continue(archive_path, tmp_path / "new.db")
    append(db, calls(2))
    delete(6)(db)
    report = verify(db)
    db.close()
    assert report.broken == Broken(
        7, "deleted", "the records before record 7 are missing from the start"
    )
