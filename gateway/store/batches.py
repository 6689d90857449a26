"""A SQLite store's operations, run by one thread on one connection in batches: every
operation queued while the last batch ran goes into one transaction, so that a burst of
calls costs one commit (one fsync with `synchronous=FULL`), not one each.

Each operation runs inside a savepoint of its own, so one that fails (a refused insert the
operation does not catch, say) is undone alone and fails alone; an operation's answer is
handed back only once its batch is committed, so nothing is taken as stored before it is.
This is the audit log's group commit (gateway/audit/log.py) for the store's one-statement
changes; SQLite statements take microseconds, fsyncs and thread hand-offs do not.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection

T = TypeVar("T")
Work = Callable[[Connection], Any]
# An operation, and the future (on the event loop) that gets its answer.
_Item = tuple[Work, "asyncio.Future[Any]"]


class Batches:
    def __init__(self, connect: Callable[[], Connection], name: str) -> None:
        self._connect = connect
        self._name = name
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Connect in the thread (a SQLite connection refuses any other); raises what
        connecting raised."""
        self._loop = asyncio.get_running_loop()
        connected: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._serve, args=(connected,), name=self._name, daemon=True
        )
        self._thread.start()
        try:
            await connected
        except BaseException:
            self._thread.join()
            self._thread = None
            raise

    async def run(self, work: Callable[[Connection], T]) -> T:
        if self._thread is None or self._loop is None:
            raise RuntimeError(f"{self._name} is not running")
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put((work, future))
        return await future

    async def stop(self) -> None:
        """After what is queued is done; then the connection is closed."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            await asyncio.get_running_loop().run_in_executor(None, thread.join)

    def _serve(self, connected: asyncio.Future[None]) -> None:
        assert self._loop is not None
        try:
            connection = self._connect()
        except BaseException as error:
            self._loop.call_soon_threadsafe(_fail, connected, error)
            return
        self._loop.call_soon_threadsafe(_answer, connected, None)
        try:
            while (batch := self._next_batch()) is not None:
                items, last = batch
                if items:
                    answers = _commit(connection, items)
                    self._loop.call_soon_threadsafe(_deliver, answers)
                if last:
                    break
        finally:
            connection.close()
            connection.engine.dispose()

    def _next_batch(self) -> tuple[list[_Item], bool] | None:
        """What is queued (waiting for the first), and whether stopping was asked."""
        first = self._queue.get()
        if first is None:
            return None
        items = [first]
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return items, False
            if item is None:
                return items, True
            items.append(item)


# (future, answer, error) for an operation
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]
_Answers = list[_Outcome]


def _commit(connection: Connection, items: list[_Item]) -> _Answers:
    # Transaction control straight on the sqlite3 connection: through SQLAlchemy each of
    # these statements cost ~15 µs, about what the store's own statements cost.
    raw = connection.connection.dbapi_connection
    assert raw is not None
    try:
        raw.execute("BEGIN IMMEDIATE")
        if len(items) == 1:  # one operation: its transaction is its savepoint
            answers: _Answers = [_run(connection, *items[0])]
            if answers[0][2] is not None:
                raw.execute("ROLLBACK")
                return answers
        else:
            answers = [_in_savepoint(connection, raw, *item) for item in items]
        raw.execute("COMMIT")
    except Exception as error:  # the batch is lost whole: every operation in it failed
        with contextlib.suppress(Exception):  # there may be no transaction left
            raw.execute("ROLLBACK")
        return [(future, None, error) for _work, future in items]
    return answers


def _run(connection: Connection, work: Work, future: asyncio.Future[Any]) -> _Outcome:
    try:
        return future, work(connection), None
    except Exception as error:
        return future, None, error


def _in_savepoint(
    connection: Connection, raw: Any, work: Work, future: asyncio.Future[Any]
) -> _Outcome:
    raw.execute("SAVEPOINT operation")
    outcome = _run(connection, work, future)
    if outcome[2] is not None:
        raw.execute("ROLLBACK TO operation")
    raw.execute("RELEASE operation")
    return outcome


def _deliver(answers: _Answers) -> None:
    for future, answer, error in answers:
        if error is None:
            _answer(future, answer)
        else:
            _fail(future, error)


def _answer(future: asyncio.Future[Any], answer: Any) -> None:
    if not future.done():  # its caller may have given up (cancelled) meanwhile
        future.set_result(answer)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
