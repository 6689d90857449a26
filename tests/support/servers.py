"""The real PostgreSQL and Redis servers the multi-replica tests use.

They are found at CALLGATE_TEST_POSTGRES_URL (default
postgresql://postgres@127.0.0.1:5432/test) and CALLGATE_TEST_REDIS_URL (default
redis://127.0.0.1:6379/0). A test needing one that is not running skips and says why;
`.ci/run` sets CALLGATE_REQUIRE_SERVICES=1, and then it fails instead. Each test gets its
own PostgreSQL schema or Redis key prefix, so tests never see each other's data.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import uuid
from collections.abc import AsyncIterator
from typing import NoReturn
from urllib.parse import urlsplit

import pytest
import redis.asyncio

from tests.support.process import free_port

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
    if not _listening(url, default_port):
        missing(f"{what} is not listening at {urlsplit(url).netloc}")


def missing(why: str) -> NoReturn:
    """Skip the test, or fail it under CALLGATE_REQUIRE_SERVICES=1."""
    if os.environ.get("CALLGATE_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{why}, and CALLGATE_REQUIRE_SERVICES=1 requires it")
    pytest.skip(why)


def require_postgres() -> str:
    require(POSTGRES_URL, 5432, "PostgreSQL")
    return POSTGRES_URL


def require_redis() -> str:
    require(REDIS_URL, 6379, "Redis")
    return REDIS_URL


async def delete_redis_keys(url: str, prefix: str) -> None:
    """Delete the keys a test made under its own `prefix`."""
    client = redis.asyncio.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def unique_name(prefix: str) -> str:
    """A schema name or key prefix no other test uses."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


class RedisServer:
    """A `redis-server` of one test's own, on a free port and saving nothing, for a test
    that stops Redis: the shared test Redis must stay up for the others."""

    def __init__(self, password: str | None = None) -> None:
        self.port = free_port()
        self.password = password
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Start it (again, on the same port) and wait until it accepts connections."""
        program = shutil.which("redis-server")
        if program is None:
            missing("redis-server is not on PATH")
        password = ["--requirepass", self.password] if self.password else []
        self.proc = await asyncio.create_subprocess_exec(
            program,
            *("--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
            *password,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        async with asyncio.timeout(10):
            while not _listening(self.url, self.port):
                assert self.proc.returncode is None, "redis-server exited"
                await asyncio.sleep(0.05)

    def pause(self) -> None:
        """Freeze it (SIGSTOP): connections are accepted and never answered, as a hung
        Redis or a lost network does."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@contextlib.asynccontextmanager
async def postgres_schema(prefix: str) -> AsyncIterator[str]:
    """The URL of an empty PostgreSQL schema no other test uses (its search_path set
    through the URL's `options`), dropped afterwards."""
    import asyncpg

    server = require_postgres()
    schema = unique_name(prefix)
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        yield f"{server}?options=-csearch_path%3D{schema}"
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


class Forwarder:
    """A TCP forwarder on 127.0.0.1 to the test PostgreSQL that can be closed (every
    connection cut, new ones refused) and opened again on the same port."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def is_open(self) -> bool:
        return self._server is not None

    def url(self, database_url: str, password: str) -> str:
        """`database_url` through this forwarder, with `password` in it (the test server
        trusts 127.0.0.1 and ignores it), for tests that it is never shown."""
        parts = urlsplit(database_url)
        netloc = f"{parts.username}:{password}@127.0.0.1:{self.port}"
        return parts._replace(netloc=netloc).geturl()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}
