"""The schema's migrations (docs/operations.md, "Database upgrades") on real SQLite files and
the real PostgreSQL, each test in a PostgreSQL schema of its own.

`release_0_1/` holds a store and an audit file written by the release before migrations
(its stores and audit log, run as they were: an action, an idempotency key, a kill switch,
two audit records).
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import DBAPIError

from gateway.audit.chain import verify
from gateway.cli import main
from gateway.config import ConfigError, load_config
from gateway.services import Services
from gateway.store import migrate
from gateway.store.actions import ActionStore
from gateway.store.engine import safe_url
from gateway.store.idempotency import IdempotencyStore
from gateway.switches.store import SwitchStore
from tests.support.gateway import ALLOW_ALL_REGO
from tests.support.servers import postgres_schema

RELEASE_0_1 = Path(__file__).parent / "release_0_1"


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """The URL of an empty PostgreSQL schema of this test's own, dropped after it."""
    async with postgres_schema("migrations") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def urls(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(storage.url, audit.url) of empty databases: two SQLite files, or one PostgreSQL
    schema holding both (as one PostgreSQL database may)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/data/callgate.db", f"sqlite:///{tmp_path}/data/audit.db"
    url: str = request.getfixturevalue("postgres_url")
    return url, url


def _differences(connection: Connection, database: migrate.Database) -> list[Any]:
    """What the database lacks or has beyond the schema module's tables, columns, types,
    nullability and indexes (Alembic's autogenerate comparison)."""

    def ours(name: str | None, kind: str, _: Any) -> bool:
        return kind != "table" or name in database.metadata.tables

    context = MigrationContext.configure(
        connection,
        opts={"version_table": database.version_table, "include_name": ours},
    )
    return list(compare_metadata(context, database.metadata))


async def _run(url: str, work: Any, *args: Any) -> Any:
    source = migrate.engine(url)
    try:
        async with source.begin() as connection:
            return await connection.run_sync(work, *args)
    finally:
        await source.dispose()


def _write_config(tmp_path: Path, store: str, audit: str) -> Path:
    policies = tmp_path / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "gateway.rego").write_text(ALLOW_ALL_REGO)
    path = tmp_path / "callgate.yaml"
    config = {"storage": {"url": store}, "audit": {"url": audit}, "policy": {"path": "policies"}}
    path.write_text(yaml.safe_dump(config))
    return path


def _db(*args: str) -> Any:
    return CliRunner().invoke(main, ["db", *args], prog_name="callgate")


async def test_an_upgrade_from_empty_builds_the_schema(urls: tuple[str, str]) -> None:
    store, audit = urls
    for url, database in ((store, migrate.STORE), (audit, migrate.AUDIT)):
        before, after = await migrate.upgrade(url, database)
        assert (before.revision, after.revision) == (None, migrate.head(database))
        assert after.current and not before.current
        assert await _run(url, _differences, database) == []
    indexes = await _run(store, lambda c: inspect(c).get_indexes("actions"))
    assert {(index["name"], bool(index["unique"])) for index in indexes} == {
        ("actions_idempotency", True),
        ("actions_state", False),
    }


async def test_the_audit_log_refuses_anything_but_appending(urls: tuple[str, str]) -> None:
    _, audit = urls
    await migrate.upgrade(audit, migrate.AUDIT)
    insert = text(
        "INSERT INTO audit_log (seq, time, kind, record, prev_hash, hash) "
        "VALUES (:seq, 't', 'k', '{}', 'p', 'h')"
    )
    await _run(audit, lambda c: c.execute(insert, [{"seq": 1}, {"seq": 2}]))
    refused = [
        ("UPDATE audit_log SET kind = 'edited'", "UPDATE refused"),
        ("DELETE FROM audit_log WHERE seq = 2", "DELETE refused"),
        (
            "INSERT INTO audit_log VALUES (0, 't', 'k', NULL, '{}', 'p', 'h')",
            "only added at the end",
        ),
    ]
    if audit.startswith("postgresql"):
        refused.append(("TRUNCATE audit_log", "TRUNCATE refused"))
    for statement, message in refused:
        with pytest.raises(DBAPIError, match=message):
            await _run(audit, lambda c, s=statement: c.execute(text(s)))
    rows = await _run(audit, lambda c: c.execute(text("SELECT seq, kind FROM audit_log")).all())
    assert sorted(tuple(row) for row in rows) == [(1, "k"), (2, "k")]


async def test_db_current_and_upgrade_show_each_database(
    urls: tuple[str, str], tmp_path: Path
) -> None:
    store, audit = urls
    config = _write_config(tmp_path, store, audit)
    shown = {url: safe_url(url) for url in urls}
    empty = "no file yet" if store.startswith("sqlite") else "empty"

    result = await asyncio.to_thread(_db, "current", "--config", str(config))
    assert (result.exit_code, result.output) == (
        0,
        f"store database {shown[store]}: {empty}, behind store_0002: run `callgate db upgrade`\n"
        f"audit database {shown[audit]}: {empty}, behind audit_0001: run `callgate db upgrade`\n",
    )
    result = await asyncio.to_thread(_db, "upgrade", "--config", str(config))
    assert (result.exit_code, result.output) == (
        0,
        f"store database {shown[store]}: store_0002 (head), from empty\n"
        f"audit database {shown[audit]}: audit_0001 (head), from empty\n",
    )
    result = await asyncio.to_thread(_db, "upgrade", "--config", str(config))
    assert result.output.splitlines()[0].endswith(": store_0002 (head), already")
    result = await asyncio.to_thread(_db, "current", "--config", str(config))
    assert (result.exit_code, result.output) == (
        0,
        f"store database {shown[store]}: store_0002 (head)\n"
        f"audit database {shown[audit]}: audit_0001 (head)\n",
    )


def _write_fleet_config(tmp_path: Path, audit: dict[str, Any]) -> Path:
    """A replica's config: the store's URL from the environment (as the Helm chart gives
    it), an agent token and a tool credential from variables only the gateway's pods set."""
    path = tmp_path / "callgate.yaml"
    config = {
        "storage": {"url": "${CALLGATE_TEST_STORAGE_URL}", "pool_size": 2},
        "audit": audit,
        "agents": [{"id": "bot", "token_env": "CALLGATE_TEST_BOT_TOKEN", "roles": ["caller"]}],
        "tools": [
            {
                "name": "refunds",
                "upstream": "https://refunds.example",
                "credentials": {"header": "X-Api-Key", "value": "${CALLGATE_TEST_TOOL_KEY}"},
            }
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return path


async def test_db_needs_only_the_database_sections(
    urls: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator or an init container holding the database URLs alone runs `callgate db`:
    the agents' and tools' secrets need not be set (docs/operations.md, "Database
    upgrades")."""
    store, audit = urls
    config = _write_fleet_config(tmp_path, {"url": audit})
    monkeypatch.setenv("CALLGATE_TEST_STORAGE_URL", store)
    monkeypatch.delenv("CALLGATE_TEST_BOT_TOKEN", raising=False)
    monkeypatch.delenv("CALLGATE_TEST_TOOL_KEY", raising=False)
    with pytest.raises(ConfigError) as serving:  # what `serve` needs is missing
        load_config(config)
    assert "tools[0].credentials.value: environment variable CALLGATE_TEST_TOOL_KEY is not set" in (
        serving.value.problems
    )

    result = await asyncio.to_thread(_db, "upgrade", "--config", str(config))
    assert (result.exit_code, result.output) == (
        0,
        f"store database {safe_url(store)}: store_0002 (head), from empty\n"
        f"audit database {safe_url(audit)}: audit_0001 (head), from empty\n",
    )
    result = await asyncio.to_thread(_db, "current", "--config", str(config))
    assert (result.exit_code, result.output) == (
        0,
        f"store database {safe_url(store)}: store_0002 (head)\n"
        f"audit database {safe_url(audit)}: audit_0001 (head)\n",
    )


async def test_db_names_what_is_wrong_with_the_database_sections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _write_fleet_config(tmp_path, {"url": "mysql://db.example/callgate"})
    monkeypatch.delenv("CALLGATE_TEST_STORAGE_URL", raising=False)
    for command in ("upgrade", "current"):
        result = await asyncio.to_thread(_db, command, "--config", str(config))
        assert (result.exit_code, result.output) == (
            2,
            f"{config}: storage.url: environment variable CALLGATE_TEST_STORAGE_URL is not set\n"
            f"{config}: audit.url: must be sqlite:///<path of a file> or "
            "postgresql://<host>/<database>\n",
        )
    monkeypatch.setenv("CALLGATE_TEST_STORAGE_URL", "postgresql://")
    config = _write_fleet_config(tmp_path, {"url": "sqlite:///a.db", "synchronous": "often"})
    result = await asyncio.to_thread(_db, "upgrade", "--config", str(config))
    assert (result.exit_code, result.output) == (
        2,
        f"{config}: storage.url: must be sqlite:///<path of a file> or "
        "postgresql://<host>/<database>\n"
        f"{config}: audit.synchronous: Input should be 'NORMAL' or 'FULL'\n",
    )


async def test_two_upgrades_at_once_build_the_schema_once(urls: tuple[str, str]) -> None:
    store, _ = urls
    results = await asyncio.gather(*(migrate.upgrade(store, migrate.STORE) for _ in range(2)))
    assert sorted(before.revision or "" for before, _ in results) == ["", "store_0002"]
    assert all(after.current for _, after in results)


async def _set_revision(url: str, database: migrate.Database, revision: str) -> None:
    update = text(f"UPDATE {database.version_table} SET version_num = :revision")
    await _run(url, lambda c: c.execute(update, {"revision": revision}))


async def test_a_database_newer_than_the_code_is_refused(urls: tuple[str, str]) -> None:
    store, _ = urls
    await migrate.upgrade(store, migrate.STORE)
    await _set_revision(store, migrate.STORE, "store_9999")
    newer = (
        r"store_9999, a revision this callgate does not know \(its head is store_0002\): "
        "it was upgraded by a newer callgate"
    )
    with pytest.raises(migrate.SchemaError, match=newer):
        await migrate.upgrade(store, migrate.STORE)
    with pytest.raises(migrate.SchemaError, match=newer):
        await migrate.check(store, migrate.STORE)
    found = await migrate.status(store, migrate.STORE)
    assert found.revision == "store_9999"  # the refused upgrade changed nothing


async def test_a_postgresql_database_behind_the_code_is_refused_naming_the_command(
    postgres_url: str,
) -> None:
    store = audit = postgres_url
    with pytest.raises(
        migrate.SchemaError, match=r"empty, behind store_0002: run `callgate db upgrade`$"
    ):
        await migrate.check(store, migrate.STORE)
    await migrate.upgrade(store, migrate.STORE)
    await migrate.check(store, migrate.STORE)
    # The audit log's history is its own, even in the same schema.
    with pytest.raises(migrate.SchemaError, match=r"behind audit_0001: run `callgate db upgrade`$"):
        await migrate.check(audit, migrate.AUDIT)


async def test_a_file_with_tables_callgate_did_not_make_is_not_adopted(tmp_path: Path) -> None:
    store, audit = tmp_path / "callgate.db", tmp_path / "audit.db"
    with sqlite3.connect(store) as db:
        db.execute("CREATE TABLE actions (id TEXT PRIMARY KEY, colour TEXT)")
    with pytest.raises(migrate.SchemaError, match=r"table actions lacks state, agent, tool, "):
        await migrate.upgrade(migrate.sqlite_url(store), migrate.STORE)
    shutil.copy(RELEASE_0_1 / "audit.db", audit)
    with sqlite3.connect(audit) as db:
        db.execute("DROP TRIGGER audit_log_no_delete")
    with pytest.raises(
        migrate.SchemaError, match=r"lacks its append-only triggers \(audit_log_no_delete\)"
    ):
        await migrate.upgrade(migrate.sqlite_url(audit), migrate.AUDIT)
    assert (await migrate.status(migrate.sqlite_url(audit), migrate.AUDIT)).revision is None


def _copy_release_0_1(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "callgate-data"
    shutil.copytree(RELEASE_0_1, data)
    return data / "callgate.db", data / "audit.db"


async def test_files_of_the_release_before_migrations_are_upgraded_in_place(
    tmp_path: Path,
) -> None:
    store, audit = _copy_release_0_1(tmp_path)
    config = _write_config(tmp_path, f"sqlite:///{store}", f"sqlite:///{audit}")
    result = await asyncio.to_thread(_db, "current", "--config", str(config))
    assert result.output.count("made before migrations (no revision), behind") == 2

    result = await asyncio.to_thread(_db, "upgrade", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert result.output.count("(head), from before migrations") == 2
    # Only the primary keys the old tables did not declare NOT NULL differ (a rowid alias
    # is never NULL; the gateway never writes a NULL id): the files are not rewritten for it.
    differences = [
        *await _run(migrate.sqlite_url(store), _differences, migrate.STORE),
        *await _run(migrate.sqlite_url(audit), _differences, migrate.AUDIT),
    ]
    assert sorted((d[0][0], d[0][2], d[0][3]) for d in differences) == [
        ("modify_nullable", "actions", "id"),
        ("modify_nullable", "audit_log", "seq"),
        ("modify_nullable", "switches", "target"),
    ]

    actions, keys, switches = ActionStore(store), IdempotencyStore(store), SwitchStore(store)
    for opened in (actions, keys, switches):
        await opened.open()
    try:
        action = await actions.get("a1")
        assert action is not None and action.body == b'{"n": 1}'
        assert action.document["state"] == "pending"
        key = await keys.get("bot", "key-2")
        assert key is not None and (key.owner, key.sent) == ("r1", False)
        assert [switch.target for switch in await switches.all()] == ["tool:echo"]
    finally:
        for opened in (actions, keys, switches):
            await opened.close()
    db = sqlite3.connect(audit)
    try:
        report = verify(db)
    finally:
        db.close()
    assert (report.broken, report.records) == (None, 2)


async def test_serve_upgrades_its_own_files_at_start_up(tmp_path: Path) -> None:
    store, audit = _copy_release_0_1(tmp_path)
    config = load_config(_write_config(tmp_path, f"sqlite:///{store}", f"sqlite:///{audit}"))
    await Services.from_config(config).upgrade_files()
    for path, database in ((store, migrate.STORE), (audit, migrate.AUDIT)):
        assert (await migrate.status(migrate.sqlite_url(path), database)).current


async def test_serve_refuses_a_file_newer_than_the_code(tmp_path: Path) -> None:
    store, audit = _copy_release_0_1(tmp_path)
    await migrate.upgrade(migrate.sqlite_url(store), migrate.STORE)
    await _set_revision(migrate.sqlite_url(store), migrate.STORE, "store_9999")
    config = _write_config(tmp_path, f"sqlite:///{store}", f"sqlite:///{audit}")
    served = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert served.returncode == 2
    assert "store_9999, a revision this callgate does not know" in served.stderr


async def test_serve_refuses_a_postgresql_store_behind_the_code(
    tmp_path: Path, postgres_url: str
) -> None:
    """serve never upgrades a PostgreSQL store (other processes share it): it names the
    command that does."""
    config = _write_config(tmp_path, postgres_url, f"sqlite:///{tmp_path}/audit.db")
    served = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert served.returncode == 2
    assert "store database" in served.stderr
    assert "empty, behind store_" in served.stderr
    assert "run `callgate db upgrade`" in served.stderr
    assert (await migrate.status(postgres_url, migrate.STORE)).revision is None
