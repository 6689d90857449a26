"""The audit log's single writer: records are batched into one transaction per flush.

`write()` returns once its records are committed: the intent of a call is durable before
the call is forwarded. `append()` queues a record without waiting (outcomes, refusals,
events); the response is never held up by it. While a batch commits, new records gather
for the next one, so under load one commit (one fsync with FULL) serves many calls.
Appended records alone wait up to `LINGER_S` for a write() to share their commit: one
call's outcome then goes with the next call's intent, one commit per call, not two.

When the store cannot be written, `write()` fails at once with `AuditUnavailable` (the
caller forwards nothing), queued records are kept and retried, and an
`audit_store_failed` record says when and why; the first commit that succeeds ends the
outage by itself.

Every record keeps at most `audit.max_record_bytes` of the agent's input (`records.cap`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import aiosqlite

from gateway.audit.chain import GENESIS, HEAD_QUERY, SCHEMA, insert_sql, seal
from gateway.audit.events import event
from gateway.audit.records import cap
from gateway.config import AuditConfig
from gateway.observability.metrics import Metrics
from gateway.store.sqlite import connect

log = logging.getLogger(__name__)

# Rows per INSERT; SQLite allows 32766 parameters (7 per row).
MAX_BATCH = 1000
RETRY_S = 0.5
LINGER_S = 0.005
_CLOSE_TIMEOUT_S = 5.0


class AuditUnavailable(Exception):
    """The audit store cannot be written now."""


# Records that are committed together, and the future of the write() that waits for them
# (None for an append()).
_Entry = tuple[list[dict[str, Any]], "asyncio.Future[None] | None"]


class AuditLog:
    def __init__(self, config: AuditConfig, metrics: Metrics) -> None:
        self.path = config.path
        self._synchronous = config.synchronous
        self._metrics = metrics
        self._max_queued = config.max_queued
        self._max_record_bytes = config.max_record_bytes
        self._db: aiosqlite.Connection | None = None
        self._queue: list[_Entry] = []
        self._wakeup = asyncio.Event()
        self._urgent = asyncio.Event()  # a write() is waiting, or the log is closing
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._inflight = 0  # entries at the front of the queue being committed now
        self._seq = 0
        self._head = GENESIS
        self.failure: str | None = None  # why the store cannot be written, during an outage

    @property
    def available(self) -> bool:
        return self._task is not None and self.failure is None

    async def open(self) -> None:
        self._db = await connect(self.path, self._synchronous)
        try:
            await self._db.executescript(SCHEMA)
            await self._read_head()
        except BaseException:
            await self._db.close()
            raise
        self._task = asyncio.create_task(self._run(), name="audit-writer")
        self._metrics.audit_available.set(1)

    async def _read_head(self) -> None:
        assert self._db is not None
        async with self._db.execute(HEAD_QUERY) as cursor:
            row = await cursor.fetchone()
        self._seq, self._head = (row[0], row[1]) if row else (0, GENESIS)

    def append(self, record: dict[str, Any]) -> None:
        """Queue a record; it is committed with the next batch."""
        record = cap(record, self._max_record_bytes)
        if len(self._queue) >= self._max_queued and len(self._queue) > self._inflight:
            (lost, *_), _done = self._queue.pop(self._inflight)
            self._metrics.audit_lost.inc()
            log.error(
                "audit queue full: oldest record lost",
                extra={"kind": lost["kind"], "request_id": lost.get("request_id")},
            )
        self._queue.append(([record], None))
        self._wakeup.set()

    async def write(self, *records: dict[str, Any]) -> None:
        """Commit `records`, in one transaction, before returning.

        Raises AuditUnavailable, at once during an outage; the records are then dropped,
        so the caller must act as if they had never been made.
        """
        if self.failure is not None or self._task is None:
            raise AuditUnavailable(self.failure or "the audit log is not open")
        done = asyncio.get_running_loop().create_future()
        self._queue.append(([cap(record, self._max_record_bytes) for record in records], done))
        self._wakeup.set()
        self._urgent.set()
        await done

    async def _run(self) -> None:
        while not (self._closing and not self._queue):
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._urgent.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(LINGER_S):
                        await self._urgent.wait()
            self._urgent.clear()
            while self._queue:
                if not await self._flush():
                    await asyncio.sleep(RETRY_S)
                    # Another process may have written to the file: continue from its head.
                    with contextlib.suppress(Exception):
                        await self._read_head()

    def _take_batch(self) -> list[_Entry]:
        """The entries of the next commit; they stay queued until it ends."""
        count = taken = 0
        while taken < len(self._queue) and (count < MAX_BATCH or taken == 0):
            count += len(self._queue[taken][0])
            taken += 1
        self._inflight = taken
        return self._queue[:taken]

    def _done_with(self, batch: list[_Entry]) -> None:
        del self._queue[: len(batch)]
        self._inflight = 0

    async def _flush(self) -> bool:
        assert self._db is not None
        batch = self._take_batch()
        started = time.perf_counter()
        try:
            rows, seq, head = seal(
                [record for records, _ in batch for record in records], self._seq, self._head
            )
            await self._db.execute(insert_sql(len(rows)), [v for row in rows for v in row])
        except Exception as exc:  # sqlite3 errors, OSError, anything: the batch is not stored
            self._done_with(batch)
            self._fail(batch, exc)
            return False
        self._done_with(batch)
        self._metrics.audit_flush.observe(time.perf_counter() - started)
        self._metrics.audit_records.inc(len(rows))
        self._seq, self._head = seq, head
        if self.failure is not None:
            log.warning("audit store writable again", extra={"after": self.failure})
            self.failure = None
            self._metrics.audit_available.set(1)
        for _, done in batch:
            if done is not None and not done.done():
                done.set_result(None)
        return True

    def _fail(self, batch: list[_Entry], exc: Exception) -> None:
        message = f"{type(exc).__name__}: {exc}"
        kept = []
        for records, done in batch:
            if done is None:
                kept.append((records, done))
            elif not done.done():  # its caller refuses the call instead
                done.set_exception(AuditUnavailable(message))
        if self.failure is None:
            log.error("audit store cannot be written; forwarding stops", extra={"error": message})
            self.failure = message
            self._metrics.audit_available.set(0)
            kept.append(([event("audit_store_failed", error=message)], None))
        self._queue[:0] = kept

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
        lost = sum(len(records) for records, _ in self._queue)
        if lost:
            self._metrics.audit_lost.inc(lost)
            log.error("audit records lost at shutdown", extra={"count": lost})
        for _, done in self._queue:
            if done is not None and not done.done():
                done.set_exception(AuditUnavailable("the audit log is closing"))
        self._queue.clear()
        if self._db is not None:
            await self._db.close()
            self._db = None
        self._metrics.audit_available.set(0)
