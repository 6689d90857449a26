"""The audit log's writer, one per process: records are batched into one transaction per
flush, committed to a SQLite file or to PostgreSQL (gateway/audit/backends.py).

`write()` returns once its records are committed: the intent of a call is durable before
the call is forwarded. It waits at most `audit.write_timeout_s`, then raises
`AuditUnavailable` (the caller refuses the call) and its records are withdrawn, never
committed later; if they were already being committed and that commit succeeds after all,
each intent among them is followed by an outcome record with `sent: false`. `append()`
queues a record without waiting (outcomes, refusals, events); the response is never held
up by it. While a batch commits, new records gather for the next one, so under load one
commit (one fsync with FULL) serves many calls. Appended records alone wait up to
`LINGER_S` for a write() to share their commit: one call's outcome then goes with the next
call's intent, one commit per call, not two. Written records go into the next commit
before a backlog of appended ones, which is committed at most `MAX_BATCH_BYTES` at a time:
an intent never waits behind more than one such batch.

Every record keeps at most `audit.max_record_bytes` of the agent's input (`records.cap`).

When the store cannot be written, every waiting `write()` fails at once with
`AuditUnavailable`, and later ones fail at once until it can (the caller forwards
nothing). Appended records are kept, up to `audit.max_queued` records and
`audit.max_queued_bytes` of JSON; beyond either bound the oldest are lost (counted in
callgate_audit_records_lost_total). The writer tries a one-record commit every `RETRY_S`,
so that finding the store writable again costs nothing however large the backlog; the
first that succeeds ends the outage, with an `audit_store_failed` record saying when and
why it began and, if records were lost, an `audit_records_lost` record saying how many.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.audit.backends import Backend, backend
from gateway.audit.chain import canonical_bytes
from gateway.audit.events import event
from gateway.audit.records import cap, unsent_outcome
from gateway.config import AuditConfig, sqlite_path
from gateway.observability.metrics import Metrics

log = logging.getLogger(__name__)

# Rows per INSERT; SQLite allows 32766 parameters (7 per row).
MAX_BATCH = 1000
# Appended records per commit: one commit of a backlog stays short, and so does the wait
# of the intents that share it (records are sealed on the event loop).
MAX_BATCH_BYTES = 2 * 1024 * 1024
RETRY_S = 0.1
LINGER_S = 0.005
_CLOSE_TIMEOUT_S = 5.0


class AuditUnavailable(Exception):
    """The audit store cannot be written now."""


@dataclass(slots=True, eq=False)
class _Entry:
    """Records committed together: a write()'s, or one appended record."""

    records: list[dict[str, Any]]
    done: asyncio.Future[None] | None = None  # a write()'s: resolved once committed
    size: int = 0  # an appended record's JSON bytes, what the outage bounds count
    arrival: int = 0
    deadline: float = 0.0  # a write()'s, on the event loop's clock
    committing: bool = False
    withdrawn: bool = False  # its write() gave up while it waited: never committed
    # Its write() gave up while it was committing: the status and error of the outcome
    # that closes each of its intents if the commit succeeds.
    unsent: tuple[int, str] | None = None

    @property
    def waiting(self) -> bool:
        """A write() still waits for it."""
        return self.done is not None and not self.done.done()


@dataclass(slots=True)
class _Loss:
    """Appended records lost since the last commit, for the record that says so."""

    count: int = 0
    bytes: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    first_time: str | None = None
    last_time: str | None = None

    def add(self, record: dict[str, Any], size: int) -> None:
        self.count += 1
        self.bytes += size
        self.kinds[record["kind"]] += 1
        self.first_time = self.first_time or record.get("time")
        self.last_time = record.get("time")

    def merge(self, later: _Loss | None) -> _Loss:
        if later is not None:
            self.count += later.count
            self.bytes += later.bytes
            self.kinds += later.kinds
            self.last_time = later.last_time
        return self

    def record(self) -> dict[str, Any]:
        return event(
            "audit_records_lost",
            count=self.count,
            bytes=self.bytes,
            kinds=dict(self.kinds),
            first_time=self.first_time,
            last_time=self.last_time,
        )


def _committed(done: asyncio.Future[None]) -> bool:
    return done.done() and not done.cancelled() and done.exception() is None


class AuditLog:
    def __init__(self, config: AuditConfig, metrics: Metrics) -> None:
        self.url = config.url
        self._backend: Backend = backend(config)
        self._metrics = metrics
        self._max_queued = config.max_queued
        self._max_queued_bytes = config.max_queued_bytes
        self._max_record_bytes = config.max_record_bytes
        self._write_timeout_s = config.write_timeout_s
        self._writes: deque[_Entry] = deque()
        self._committing: list[_Entry] = []  # the writes in the commit under way
        self._expiry: asyncio.TimerHandle | None = None  # for the oldest write waiting
        self._appends: deque[_Entry] = deque()
        self._queued_bytes = 0  # of the appended records waiting (not those committing)
        self._arrivals = itertools.count()
        self._wakeup = asyncio.Event()
        self._urgent = asyncio.Event()  # a write() is waiting, or the log is closing
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.failure: str | None = None  # why the store cannot be written, during an outage
        # Written at the start of the next commit: why the store failed, what was lost.
        self._outage: dict[str, Any] | None = None
        self._loss: _Loss | None = None
        metrics.audit_queued_bytes.set_function(lambda: self._queued_bytes)

    @property
    def available(self) -> bool:
        return self._task is not None and self.failure is None

    @property
    def path(self) -> Path:
        """The SQLite file of the log (not for a log on PostgreSQL)."""
        return sqlite_path(self.url)

    async def open(self) -> None:
        """Open the log in a database its migrations made (gateway/store/migrate.py)."""
        await self._backend.open()
        self._task = asyncio.create_task(self._run(), name="audit-writer")
        self._metrics.audit_available.set(1)

    def append(self, record: dict[str, Any]) -> None:
        """Queue a record; it is committed with a coming batch."""
        record, size = self._capped(record)
        self._appends.append(_Entry([record], size=size, arrival=next(self._arrivals)))
        self._queued_bytes += size
        self._shed()
        self._wakeup.set()

    def _capped(self, record: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """`record` within the budget for the agent's input, and its size as JSON."""
        size = len(canonical_bytes(record))
        if size > self._max_record_bytes:  # else its agent's input is within it too
            record = cap(record, self._max_record_bytes)
            size = len(canonical_bytes(record))
        return record, size

    def _shed(self) -> None:
        """Lose the oldest appended records beyond the queue's bounds."""
        while self._appends and (
            len(self._appends) > self._max_queued or self._queued_bytes > self._max_queued_bytes
        ):
            lost = self._appends.popleft()
            self._queued_bytes -= lost.size
            if self._loss is None:
                self._loss = _Loss()
                log.error("audit queue full: the oldest records are being lost")
            self._loss.add(lost.records[0], lost.size)
            self._metrics.audit_lost.inc()

    async def write(self, *records: dict[str, Any]) -> None:
        """Commit `records`, in one transaction, before returning.

        Raises AuditUnavailable, at once during an outage, or when they are not committed
        within `audit.write_timeout_s`; the caller must then act as if they had never been
        made: they are withdrawn (or closed as not sent, if they were committed after all).
        """
        if self.failure is not None or self._task is None:
            raise AuditUnavailable(self.failure or "the audit log is not open")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        entry = _Entry(
            [self._capped(record)[0] for record in records],
            done=done,
            arrival=next(self._arrivals),
            deadline=loop.time() + self._write_timeout_s,
        )
        self._writes.append(entry)
        if self._expiry is None:
            self._expiry = loop.call_at(entry.deadline, self._expire)
        self._wakeup.set()
        self._urgent.set()
        try:
            await done
        except asyncio.CancelledError:  # the caller is gone (its agent hung up)
            if not _committed(done):
                self._give_up(entry, 499, "agent_disconnected")
            raise

    def _expire(self) -> None:
        """Refuse the writes past their deadline (one timer for all: they are queued in
        the order of their deadlines, behind those committing now)."""
        self._expiry = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for entry in self._committing:
            if entry.deadline <= now:
                self._time_out(entry)
        while self._writes and self._writes[0].deadline <= now:
            self._time_out(self._writes.popleft())
        deadlines = [entry.deadline for entry in self._committing if entry.waiting]
        if self._writes:
            deadlines.append(self._writes[0].deadline)
        if deadlines:
            self._expiry = loop.call_at(min(deadlines), self._expire)

    def _time_out(self, entry: _Entry) -> None:
        if entry.done is None or entry.done.done():
            return
        entry.done.set_exception(
            AuditUnavailable(
                f"not committed within audit.write_timeout_s ({self._write_timeout_s:g} s)"
            )
        )
        self._give_up(entry, 503, "audit_unavailable")
        self._metrics.audit_write_timeouts.inc()

    def _give_up(self, entry: _Entry, status: int, error: str) -> None:
        if entry.committing:
            entry.unsent = (status, error)
        else:
            entry.withdrawn = True

    def _pending(self) -> bool:
        return bool(self._writes or self._appends or self._outage or self._loss)

    async def _run(self) -> None:
        while not (self._closing and not self._pending()):
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._urgent.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(LINGER_S):
                        await self._urgent.wait()
            self._urgent.clear()
            while self._pending():
                if not await self._flush():
                    await asyncio.sleep(RETRY_S)
                    await self._backend.recover()

    def _take_batch(self) -> list[_Entry]:
        """The entries of the next commit: the waiting writes, then the oldest appended
        records (one only while the store is failing), in the order they came."""
        batch: list[_Entry] = []
        rows = 0
        while self._writes and rows < MAX_BATCH:
            entry = self._writes.popleft()
            if not entry.withdrawn:
                batch.append(entry)
                rows += len(entry.records)
        wrote = len(batch)
        room = 1 if self.failure is not None else MAX_BATCH - rows
        size = 0
        while self._appends and room > 0 and size < MAX_BATCH_BYTES:
            entry = self._appends.popleft()
            self._queued_bytes -= entry.size
            size += entry.size
            room -= 1
            batch.append(entry)
        self._committing = batch[:wrote]
        for entry in self._committing:
            entry.committing = True
        if wrote and len(batch) > wrote:
            batch.sort(key=lambda entry: entry.arrival)
        return batch

    async def _flush(self) -> bool:
        """Commit the next batch; False (and everything kept for a retry) if it failed."""
        batch = self._take_batch()
        outage, loss = self._outage, self._loss
        self._loss = None  # records lost from now on are counted apart
        notes = [outage] if outage is not None else []
        if loss is not None:
            notes.append(loss.record())
        records = [*notes, *(record for entry in batch for record in entry.records)]
        if not records:
            return True
        started = time.perf_counter()
        try:
            rows = await self._backend.commit(records)
        except Exception as exc:  # database errors, OSError, anything: the batch is not stored
            self._loss = loss.merge(self._loss) if loss is not None else self._loss
            self._fail(batch, exc)
            return False
        self._metrics.audit_flush.observe(time.perf_counter() - started)
        self._metrics.audit_records.inc(rows)
        if self._outage is outage:
            self._outage = None
        if self.failure is not None:
            log.warning("audit store writable again", extra={"after": self.failure})
            self.failure = None
            self._metrics.audit_available.set(1)
        if loss is not None:
            log.warning("audit records lost in an outage", extra={"count": loss.count})
        self._end_commit()
        for entry in batch:
            if entry.done is not None and not entry.done.done():
                entry.done.set_result(None)
            if entry.unsent is not None:
                for record in entry.records:
                    if record["kind"] == "intent":
                        self.append(unsent_outcome(record, *entry.unsent))
        return True

    def _end_commit(self) -> None:
        for entry in self._committing:
            entry.committing = False
        self._committing = []

    def _fail(self, batch: list[_Entry], exc: Exception) -> None:
        message = self._backend.reason(exc)
        unavailable = AuditUnavailable(message)
        self._end_commit()
        appended = []
        for entry in batch:
            if entry.done is None:
                appended.append(entry)
            elif not entry.done.done():  # its caller refuses the call instead
                entry.done.set_exception(unavailable)
        # Back in front of the newer ones; the bounds then lose the oldest if they must.
        self._appends.extendleft(reversed(appended))
        self._queued_bytes += sum(entry.size for entry in appended)
        # The writes still waiting fail now too, rather than wait out an outage.
        for entry in self._writes:
            if entry.done is not None and not entry.done.done():
                entry.done.set_exception(unavailable)
        self._writes.clear()
        if self.failure is None:
            log.error("audit store cannot be written; forwarding stops", extra={"error": message})
            self.failure = message
            self._metrics.audit_available.set(0)
            if self._outage is None:
                self._outage = event("audit_store_failed", error=message)
        self._shed()

    async def close(self) -> None:
        """Commit what is queued (giving up after a few seconds of outage), then close."""
        if self._task is not None:
            self._closing = True
            self._wakeup.set()
            self._urgent.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), _CLOSE_TIMEOUT_S)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        lost = sum(len(entry.records) for entry in (*self._writes, *self._appends))
        if lost:
            self._metrics.audit_lost.inc(lost)
            log.error("audit records lost at shutdown", extra={"count": lost})
        for entry in self._writes:
            if entry.done is not None and not entry.done.done():
                entry.done.set_exception(AuditUnavailable("the audit log is closing"))
        self._writes.clear()
        self._appends.clear()
        self._queued_bytes = 0
        await self._backend.close()
        self._metrics.audit_available.set(0)
