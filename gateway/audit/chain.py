"""The hash chain: how a record is sealed into it, and how the chain is checked.

A record is a JSON object; its canonical form is compact JSON with sorted keys in UTF-8
(orjson's output; Python's `json.dumps(sort_keys=True, separators=(",", ":"),
ensure_ascii=False)` writes the same text for every record the gateway makes, floats in
exponent form aside). Its hash is SHA-256 over that text followed by the previous
record's hash (hex); the first record of a file follows `GENESIS`, or, in a file that
continues an archived one, the archive's head. Changing, removing, moving or adding a record
anywhere but at the end breaks a link. Adding records at the end is what the gateway does:
only a head hash noted elsewhere (a SIEM export) shows that a tail was cut or forged.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import orjson

from gateway.audit.events import event

GENESIS = "0" * 64
CONTINUED = "chain_continued"

HEAD_QUERY = "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"

Row = tuple[int, str, str, str | None, str, str, str]


class Database(Protocol):
    """A connection to the audit log that runs SQL with `?` placeholders and returns
    its rows: a `sqlite3.Connection`, or one to PostgreSQL (gateway/cli/audit.py). The
    queries that read the log are plain SQL that both dialects take."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...


def canonical(record: dict[str, Any]) -> str:
    return canonical_bytes(record).decode()


def canonical_bytes(value: Any) -> bytes:
    """The canonical form of a record (or of any part of one) in UTF-8."""
    try:  # ten times faster than json.dumps, and the same text for what records hold
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        # An integer beyond 64 bits, or a lone surrogate (text that is not Unicode, kept
        # as an escape so that the record can still be stored: a record that cannot be
        # written would stop the log).
        text = json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str
        )
        return text.encode()


def chain_hash(text: str, prev_hash: str) -> str:
    return hashlib.sha256((text + prev_hash).encode()).hexdigest()


def seal(records: list[dict[str, Any]], seq: int, head: str) -> tuple[list[Row], int, str]:
    """Number and hash `records` after the record (`seq`, `head`).

    Returns the table rows and the new (seq, head).
    """
    rows: list[Row] = []
    for record in records:
        seq += 1
        record["seq"] = seq
        text = canonical(record)
        digest = chain_hash(text, head)
        row = (seq, record["time"], record["kind"], record.get("request_id"), text, head, digest)
        rows.append(row)
        head = digest
    return rows, seq, head


@functools.lru_cache(maxsize=64)
def insert_sql(count: int) -> str:
    """One INSERT of `count` rows: one statement is one transaction in autocommit mode."""
    values = ",".join(["(?,?,?,?,?,?,?)"] * count)
    return (
        "INSERT INTO audit_log (seq, time, kind, request_id, record, prev_hash, hash) "
        f"VALUES {values}"
    )


Tamper = Literal["edited", "deleted", "reordered", "inserted"]


@dataclass(frozen=True)
class Broken:
    seq: int  # the table position (seq column) of the first broken record
    kind: Tamper
    detail: str


@dataclass
class Report:
    records: int = 0
    last_seq: int = 0
    head: str = GENESIS
    continues_from: str | None = None
    broken: Broken | None = None
    # Intent records with no outcome record: calls whose result the log does not know.
    incomplete: list[dict[str, Any]] = field(default_factory=list)


# How many recent hashes are remembered to recognise a record that links past an inserted one.
_RECENT = 10_000


def verify(db: Database) -> Report:
    """Walk the whole chain in table order; stop at the first broken record."""
    report = Report()
    expected_seq = 1
    prev_hash = GENESIS
    # hash -> [seq, the next row's position, records intact up to it]
    recent: OrderedDict[str, list[Any]] = OrderedDict()
    open_intents: dict[str, dict[str, Any]] = {}
    rows = db.execute(
        "SELECT seq, time, kind, request_id, record, prev_hash, hash FROM audit_log ORDER BY seq"
    )
    for position, time, kind, request_id, text, link, digest in rows:
        if recent:
            last = next(reversed(recent.values()))
            if last[1] is None:
                last[1] = position
        problem = _self_check(time, kind, request_id, text, link, digest)
        if problem is not None:
            report.broken = Broken(position, "edited", problem)
            return report
        record = json.loads(text)
        seq = record.get("seq")
        if report.records == 0:
            broken = _check_start(record, seq, link, position)
            if broken is not None:
                report.broken = broken
                return report
            if link != GENESIS:
                report.continues_from = link
        elif link != prev_hash or seq != expected_seq:
            report.broken = _classify(db, recent, position, seq, link, expected_seq)
            if report.broken.kind == "inserted" and link in recent:
                # The records after `link` looked intact but were added later: rewind.
                report.last_seq, _, report.records = recent[link]
                report.head = link
            return report
        report.records += 1
        report.last_seq = seq
        report.head = prev_hash = digest
        expected_seq = seq + 1
        recent[digest] = [seq, None, report.records]
        if len(recent) > _RECENT:
            recent.popitem(last=False)
        if kind == "intent":
            open_intents[request_id] = record
        elif kind == "outcome":
            open_intents.pop(request_id, None)
    report.incomplete = list(open_intents.values())
    return report


def _self_check(
    time: str, kind: str, request_id: str | None, text: str, link: str, digest: str
) -> str | None:
    if chain_hash(text, link) != digest:
        return "its contents do not match its hash"
    try:
        record = json.loads(text)
    except ValueError:
        return "its record is not valid JSON"
    if not isinstance(record, dict) or not isinstance(record.get("seq"), int):
        return "its record has no sequence number"
    if (record.get("time"), record.get("kind"), record.get("request_id")) != (
        time,
        kind,
        request_id,
    ):
        return "its time, kind or request_id columns differ from its sealed record"
    return None


def _check_start(record: dict[str, Any], seq: int, link: str, position: int) -> Broken | None:
    if link == GENESIS and seq == 1:
        return None
    if (record.get("kind"), record.get("previous_head"), record.get("previous_seq")) == (
        CONTINUED,
        link,
        seq - 1,
    ):
        return None
    if seq > 1:
        missing = "record 1 is" if seq == 2 else f"the records before record {seq} are"
        return Broken(position, "deleted", f"{missing} missing from the start")
    return Broken(position, "inserted", "the first record does not start the chain")


def _classify(
    db: Database,
    recent: OrderedDict[str, list[Any]],
    position: int,
    seq: int,
    link: str,
    expected_seq: int,
) -> Broken:
    """Name what happened to the chain just before the record at `position`."""
    if link in recent and seq == recent[link][0] + 1 and seq < expected_seq:
        earlier, first_inserted, _ = recent[link]
        return Broken(
            first_inserted,
            "inserted",
            f"record {seq} links to record {earlier}: what comes between was added later",
        )
    if seq > expected_seq:
        later = db.execute("SELECT record FROM audit_log WHERE seq > ? ORDER BY seq", (position,))
        if any(json.loads(text).get("seq") == expected_seq for (text,) in later):
            return Broken(position, "reordered", f"record {seq} comes before record {expected_seq}")
        missing = (
            f"record {expected_seq} is"
            if seq == expected_seq + 1
            else f"records {expected_seq} to {seq - 1} are"
        )
        return Broken(position, "deleted", f"{missing} missing before record {seq}")
    if seq < expected_seq:
        return Broken(position, "reordered", f"record {seq} comes after record {expected_seq - 1}")
    return Broken(
        position,
        "inserted",
        f"record {seq} does not link to record {seq - 1}: "
        "it was forged, or the record before it was replaced",
    )


def start_after(db: Database, archived: Report, archive_name: str) -> None:
    """Begin an empty log (in a file its migrations made) with a record that links it to
    the head of an archived one."""
    if db.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]:
        raise ValueError("the new audit log is not empty")
    record = event(
        CONTINUED,
        previous_head=archived.head,
        previous_seq=archived.last_seq,
        previous_file=archive_name,
    )
    rows, _, _ = seal([record], archived.last_seq, archived.head)
    db.execute(insert_sql(1), rows[0])
