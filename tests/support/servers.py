"""The real PostgreSQL and Redis servers the multi-replica tests use.

They are found at CALLGATE_TEST_POSTGRES_URL (default
postgresql://postgres@127.0.0.1:5432/test) and CALLGATE_TEST_REDIS_URL (default
redis://127.0.0.1:6379/0). A test needing one that is not running skips and says why;
`.ci/run` sets CALLGATE_REQUIRE_SERVICES=1, and then it fails instead. Each test gets its
own PostgreSQL schema or Redis key prefix, so tests never see each other's data.
"""

from __future__ import annotations

import os
import socket
import uuid
from urllib.parse import urlsplit

import pytest

POSTGRES_URL = os.environ.get(
    "CALLGATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("CALLGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _listening(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 1
        ):
            return True
    except OSError:
        return False


def require(url: str, default_port: int, what: str) -> None:
    """Skip (fail under CALLGATE_REQUIRE_SERVICES=1) unless `what` listens at `url`."""
    if _listening(url, default_port):
        return
    why = f"{what} is not listening at {urlsplit(url).netloc}"
    if os.environ.get("CALLGATE_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{why}, and CALLGATE_REQUIRE_SERVICES=1 requires it")
    pytest.skip(why)


def require_postgres() -> str:
    require(POSTGRES_URL, 5432, "PostgreSQL")
    return POSTGRES_URL


def require_redis() -> str:
    require(REDIS_URL, 6379, "Redis")
    return REDIS_URL


def unique_name(prefix: str) -> str:
    """A schema name or key prefix no other test uses."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"
