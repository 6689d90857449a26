"""Shared fixtures: real aiohttp upstreams and a real gateway, all on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from gateway.config import Config, Limits
from gateway.serve import build_apps
from gateway.services import SERVICES
from gateway.store import migrate
from tests.support.audit import with_audit
from tests.support.gateway import STORE, make_config
from tests.support.servers import (
    delete_redis_keys,
    postgres_schema,
    require_redis,
    unique_name,
)

os.environ.setdefault("RUST_LIB_BACKTRACE", "0")


@pytest.fixture
async def start_upstream() -> Any:
    """start_upstream(app) -> base URL of a real server running that app."""
    servers: list[TestServer] = []

    async def start(app: web.Application) -> str:
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def start_gateway(tmp_path: Path) -> Any:
    """start_gateway(upstream_url, **make_config kwargs) -> TestClient on the agent listener.

    The client's `.admin` attribute is a TestClient on the admin listener.
    """
    clients: list[TestClient] = []

    async def start(
        upstream: str = "http://127.0.0.1:9", *, config: Config | None = None, **kw: Any
    ) -> TestClient:
        cfg = config or make_config(tmp_path, upstream, **kw)
        agent_app, admin_app = build_apps(cfg)
        client = TestClient(TestServer(agent_app, host="127.0.0.1"))
        admin = TestClient(TestServer(admin_app, host="127.0.0.1"))
        await client.start_server()
        await admin.start_server()
        client.admin = admin  # type: ignore[attr-defined]
        client.services = agent_app[SERVICES]  # type: ignore[attr-defined]
        clients.extend([admin, client])
        return client

    yield start
    for client in clients:
        await client.close()


@pytest.fixture(params=["memory", "redis"])
async def limits_backend(
    request: pytest.FixtureRequest,
) -> AsyncIterator[Callable[[Limits], Limits]]:
    """limits_backend(limits) -> the same limits counted in memory, or on the test Redis
    under a key prefix of this test's own (docs/limits.md, "Limits on Redis"); the
    test's Redis keys are deleted after it."""
    if request.param == "memory":
        yield lambda limits: limits
        return
    url = require_redis()
    prefix = unique_name("callgate") + ":"
    yield lambda limits: limits.model_copy(update={"storage": SecretStr(url), "key_prefix": prefix})
    await delete_redis_keys(url, prefix)


@pytest.fixture
async def postgres_audit_url() -> AsyncIterator[str]:
    """The URL of a PostgreSQL schema of this test's own holding an upgraded, empty
    audit log; dropped after the test."""
    async with postgres_schema("audit") as url:
        await migrate.upgrade(url, migrate.AUDIT)
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def audit_backend(request: pytest.FixtureRequest) -> Callable[[Config], Config]:
    """audit_backend(config) -> `config` with its audit log in its SQLite file, or in a
    PostgreSQL schema of this test's own (docs/deployment.md, "Running many replicas")."""
    if request.param == "sqlite":
        return lambda config: config
    url: str = request.getfixturevalue("postgres_audit_url")
    return lambda config: with_audit(config, url=url)


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The storage.url of an upgraded store: a SQLite file, or a PostgreSQL schema as
    `postgres_store_url` gives. While the test runs, make_config's configs use the
    PostgreSQL one; on SQLite they keep their own file under tmp_path."""
    if request.param == "postgresql":
        async with _postgres_store() as url:
            yield url
        return
    url = migrate.sqlite_url(tmp_path / "store" / "callgate.db")
    await migrate.upgrade(url, migrate.STORE)
    yield url


@pytest.fixture
async def postgres_store_url() -> AsyncIterator[str]:
    """The storage.url of an upgraded PostgreSQL schema of this test's own (dropped after
    it), which make_config's configs use while the test runs."""
    async with _postgres_store() as url:
        yield url


@contextlib.asynccontextmanager
async def _postgres_store() -> AsyncIterator[str]:
    async with postgres_schema("store") as url:
        await migrate.upgrade(url, migrate.STORE)
        STORE["url"] = url
        try:
            yield url
        finally:
            STORE["url"] = None
