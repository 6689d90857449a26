"""Reading the audit log of a gateway under test, straight from its SQLite file or its
PostgreSQL database (a `Source`: the file's path, or the `postgresql://` URL)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from gateway.audit.chain import Database, Report, verify
from gateway.audit.postgres_reader import read_postgres
from gateway.config import AuditConfig, Config, Limits

Source = Path | str
T = TypeVar("T")


def _read(source: Source, work: Callable[[Database], T]) -> T:
    if isinstance(source, Path):
        db = sqlite3.connect(source)
        try:
            return work(db)
        finally:
            db.close()
    # From sync code that may run inside a test's event loop: a loop of its own.
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, read_postgres(source, work)).result()


def read_records(source: Source) -> list[dict[str, Any]]:
    rows = _read(
        source, lambda db: list(db.execute("SELECT record FROM audit_log ORDER BY seq", ()))
    )
    return [json.loads(text) for (text,) in rows]


def call_records(source: Source, request_id: str) -> list[dict[str, Any]]:
    return [r for r in read_records(source) if r.get("request_id") == request_id]


def verify_file(source: Source) -> Report:
    return _read(source, verify)


def audit_source(gw: Any) -> Source:
    """Where the gateway under test (a TestClient of `start_gateway`) writes its log."""
    url: str = gw.services.audit.url
    return url if url.startswith("postgresql://") else gw.services.audit.path


async def wait_for_records(
    source: Source, ready: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 10
) -> list[dict[str, Any]]:
    """The records once `ready(records)` holds; outcome records land just after a response."""
    async with asyncio.timeout(timeout_s):
        while True:
            records = read_records(source)
            if ready(records):
                return records
            await asyncio.sleep(0.02)


def with_audit(config: Config, *, limits: bool = True, **settings: Any) -> Config:
    """`config` with these audit settings (validated); without the loop breaker and the
    session budget when `limits` is false, for storms of calls."""
    audit = AuditConfig.model_validate({**config.audit.model_dump(), **settings})
    update: dict[str, Any] = {"audit": audit}
    if not limits:
        update["limits"] = Limits(loop=None, session_budget=None)
    return config.model_copy(update=update)
