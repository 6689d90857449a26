"""Reading the audit log of a gateway under test, straight from its SQLite file."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.audit.chain import Report, verify
from gateway.config import AuditConfig, Config, Limits


def read_records(path: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT record FROM audit_log ORDER BY seq").fetchall()
    finally:
        db.close()
    return [json.loads(text) for (text,) in rows]


def call_records(path: Path, request_id: str) -> list[dict[str, Any]]:
    return [r for r in read_records(path) if r.get("request_id") == request_id]


def verify_file(path: Path) -> Report:
    db = sqlite3.connect(path)
    try:
        return verify(db)
    finally:
        db.close()


async def wait_for_records(
    path: Path, ready: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 10
) -> list[dict[str, Any]]:
    """The records once `ready(records)` holds; outcome records land just after a response."""
    async with asyncio.timeout(timeout_s):
        while True:
            records = read_records(path)
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
