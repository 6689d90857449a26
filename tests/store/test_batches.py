"""A SQLite store's operations in batches (gateway/store/batches.py): operations queued
together commit together, one that fails is undone alone, and stopping finishes what was
queued."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Connection, create_engine, text

from gateway.store.batches import Batches


def _batches(path: Path) -> Batches:
    made = create_engine(f"sqlite:///{path}", isolation_level="AUTOCOMMIT")
    return Batches(made.connect, "test-store")


async def _rows(path: Path) -> list[str]:
    reader = _batches(path)
    await reader.start()
    try:
        return await reader.run(
            lambda db: [row[0] for row in db.execute(text("SELECT name FROM t ORDER BY name"))]
        )
    finally:
        await reader.stop()


def _insert(name: str, fail: bool = False) -> Callable[[Connection], str]:
    def work(db: Connection) -> str:
        db.execute(text("INSERT INTO t (name) VALUES (:name)"), {"name": name})
        if fail:
            raise ValueError(f"{name} fails after its insert")
        return name

    return work


async def test_operations_queued_together_all_land_and_a_failing_one_alone_is_undone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    batches = _batches(path)
    await batches.start()
    await batches.run(lambda db: db.execute(text("CREATE TABLE t (name TEXT PRIMARY KEY)")))
    names = [f"n{i:03}" for i in range(200)]
    outcomes = await asyncio.gather(
        *(batches.run(_insert(name, fail=name.endswith("7"))) for name in names),
        batches.run(_insert("n000")),  # a duplicate key: refused alone
        return_exceptions=True,
    )
    await batches.stop()
    failed = [
        name for name, outcome in zip(names, outcomes, strict=False) if not isinstance(outcome, str)
    ]
    assert failed == [name for name in names if name.endswith("7")]
    assert "UNIQUE constraint failed" in str(outcomes[-1])
    assert await _rows(path) == [name for name in names if not name.endswith("7")]


async def test_an_operation_alone_in_its_batch_that_fails_is_undone(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    batches = _batches(path)
    await batches.start()
    await batches.run(lambda db: db.execute(text("CREATE TABLE t (name TEXT PRIMARY KEY)")))
    with pytest.raises(ValueError, match="fails after its insert"):
        await batches.run(_insert("lone", fail=True))
    assert await batches.run(_insert("next")) == "next"
    await batches.stop()
    assert await _rows(path) == ["next"]


async def test_stopping_finishes_what_was_queued(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    batches = _batches(path)
    await batches.start()
    await batches.run(lambda db: db.execute(text("CREATE TABLE t (name TEXT PRIMARY KEY)")))
    queued = [asyncio.ensure_future(batches.run(_insert(f"q{i}"))) for i in range(20)]
    await asyncio.sleep(0)  # queued, not yet answered
    await batches.stop()
    assert [await task for task in queued] == [f"q{i}" for i in range(20)]
    assert len(await _rows(path)) == 20
    with pytest.raises(RuntimeError, match="not running"):
        await batches.run(_insert("late"))


async def test_a_file_that_cannot_be_opened_fails_the_start(tmp_path: Path) -> None:
    (tmp_path / "a-folder.db").mkdir()
    batches = _batches(tmp_path / "a-folder.db")
    with pytest.raises(Exception, match="unable to open database file"):
        await batches.start()
