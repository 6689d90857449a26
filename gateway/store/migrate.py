"""The schema's migrations (gateway/store/migrations/), applied to a store or audit database
on SQLite or PostgreSQL: `upgrade`, `status`, and `check` for a process that may not upgrade.

Each database has its own history (`store_0001`, … and `audit_0001`, …) in its own table
(`alembic_version_store`, `alembic_version_audit`), so that both may share one PostgreSQL
database. An upgrade is one transaction that first locks out any other
upgrade of the same database (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock), so
two processes starting at once upgrade it once. A SQLite file written before migrations
existed (its tables but no history) is checked, given the columns those releases added when
they opened it, stamped at the first revision and upgraded: it is never abandoned.

A PostgreSQL URL may carry libpq's `options=-csearch_path=…` to put the tables in a schema.
Credentials in a URL never appear in a message.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, MetaData, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateColumn

from gateway.config import SQLITE_PREFIX
from gateway.store import schema
from gateway.store.engine import UrlError, create, safe_url, sqlite_file
from gateway.store.sqlite import BUSY_TIMEOUT_MS

_MIGRATIONS = Path(__file__).parent / "migrations"
UPGRADE_COMMAND = "callgate db upgrade"


class SchemaError(Exception):
    """The database cannot be used by this version of callgate as it is."""


@dataclass(frozen=True)
class Database:
    name: str  # "store" or "audit": its directory of revisions
    metadata: MetaData
    # an arbitrary constant of its own for PostgreSQL's advisory lock during an upgrade
    lock_key: int

    @property
    def first(self) -> str:
        return f"{self.name}_0001"

    @property
    def version_table(self) -> str:
        return f"alembic_version_{self.name}"


STORE = Database("store", schema.STORE, 0x63_67_73)
AUDIT = Database("audit", schema.AUDIT, 0x63_67_61)


@dataclass(frozen=True)
class Status:
    """Where a database stands against the code's head revision."""

    database: Database
    url: str  # without its password
    revision: str | None  # None: no migration history
    head: str
    known: bool  # False: a revision of a newer callgate
    made_before_migrations: bool  # its tables, but no history yet
    missing: bool = False  # a SQLite file that does not exist

    @property
    def current(self) -> bool:
        return self.revision == self.head

    def describe(self) -> str:
        """One line for `callgate db current`."""
        where = f"{self.database.name} database {self.url}"
        if self.current:
            return f"{where}: {self.revision} (head)"
        if not self.known:
            return (
                f"{where}: {self.revision}, a revision this callgate does not know (its head "
                f"is {self.head}): it was upgraded by a newer callgate"
            )
        if self.missing:
            state = "no file yet"
        elif self.made_before_migrations:
            state = "made before migrations (no revision)"
        else:
            state = self.revision or "empty"
        return f"{where}: {state}, behind {self.head}: run `{UPGRADE_COMMAND}`"


def sqlite_url(path: Path) -> str:
    return f"{SQLITE_PREFIX}{path}"


@functools.cache
def _scripts(database: Database) -> ScriptDirectory:
    return ScriptDirectory(str(_MIGRATIONS), version_locations=[str(_MIGRATIONS / database.name)])


def head(database: Database) -> str:
    revision = _scripts(database).get_current_head()
    assert revision is not None, f"no revisions for the {database.name} database"
    return revision


def _known(database: Database, revision: str) -> bool:
    try:
        return _scripts(database).get_revision(revision) is not None
    except CommandError:
        return False


def engine(url: str) -> AsyncEngine:
    """An engine without a pool for a `sqlite:///` or `postgresql://` URL of the config."""
    try:
        source = create(url, BUSY_TIMEOUT_MS / 1000, poolclass=NullPool)
    except UrlError as exc:
        raise SchemaError(str(exc)) from None
    if sqlite_file(url) is not None:
        # pysqlite's own transaction handling emits no BEGIN before DDL; take the write
        # lock at once instead, so that a second process's upgrade waits for this one.
        @event.listens_for(source.sync_engine, "connect")
        def _autocommit(dbapi_connection: Any, _: Any) -> None:
            dbapi_connection.isolation_level = None

        @event.listens_for(source.sync_engine, "begin")
        def _begin(connection: Connection) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return source


def _alembic(connection: Connection, database: Database) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", str(_MIGRATIONS / database.name))
    config.attributes["connection"] = connection
    config.attributes["metadata"] = database.metadata
    config.attributes["version_table"] = database.version_table
    return config


def _context(connection: Connection, database: Database) -> MigrationContext:
    return MigrationContext.configure(connection, opts={"version_table": database.version_table})


def _status(connection: Connection, database: Database, url: str) -> Status:
    revision = _context(connection, database).get_current_revision()
    tables = set(inspect(connection).get_table_names())
    return Status(
        database=database,
        url=safe_url(url),
        revision=revision,
        head=head(database),
        known=revision is None or _known(database, revision),
        made_before_migrations=revision is None and bool(tables & set(database.metadata.tables)),
    )


def _adopt(connection: Connection, status: Status) -> None:
    """Bring a SQLite file of the releases before migrations to the first revision's schema
    (which the schema module still describes) and stamp it there."""
    where = f"{status.database.name} database {status.url}"
    if connection.dialect.name != "sqlite":
        raise SchemaError(f"{where}: has callgate's tables but no migration history")
    inspector = inspect(connection)
    present = set(inspector.get_table_names())
    for table in status.database.metadata.sorted_tables:
        if table.name in schema.AFTER_FIRST_REVISION:
            continue
        if table.name not in present:  # a store that never opened this one yet
            table.create(connection)
            continue
        columns = {column["name"] for column in inspector.get_columns(table.name)}
        missing = [column for column in table.columns if column.name not in columns]
        added = schema.ADDED_BEFORE_MIGRATIONS.get(table.name, ())
        foreign = [column.name for column in missing if column.name not in added]
        if foreign:
            raise SchemaError(
                f"{where}: table {table.name} lacks {', '.join(foreign)}: "
                "it is not a table callgate made"
            )
        for column in missing:
            declaration = CreateColumn(column).compile(dialect=connection.dialect)
            connection.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {declaration}")
        for index in table.indexes:
            index.create(connection, checkfirst=True)
    if status.database is AUDIT:
        triggers = {
            str(row[0])
            for row in connection.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_log'"
            )
        }
        lacking = [name for name in schema.AUDIT_TRIGGERS if name not in triggers]
        if lacking:
            raise SchemaError(
                f"{where}: audit_log lacks its append-only triggers ({', '.join(lacking)}): "
                "check it with `callgate audit verify` before using it"
            )
    _context(connection, status.database).stamp(_scripts(status.database), status.database.first)


def _upgrade(connection: Connection, database: Database, url: str) -> tuple[Status, Status]:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": database.lock_key})
    before = _status(connection, database, url)
    if not before.known:
        raise SchemaError(before.describe())
    if before.made_before_migrations:
        _adopt(connection, before)
    command.upgrade(_alembic(connection, database), "head")
    return before, _status(connection, database, url)


async def upgrade(url: str, database: Database) -> tuple[Status, Status]:
    """Bring `database` at `url` to the code's head revision, in one transaction; returns
    where it stood before and after. Refuses (SchemaError) one newer than the code."""
    source = engine(url)
    try:
        async with source.begin() as connection:
            return await connection.run_sync(_upgrade, database, url)
    finally:
        await source.dispose()


async def status(url: str, database: Database) -> Status:
    """Where `database` at `url` stands; a SQLite file that does not exist is not made."""
    parsed = make_url(url)
    if parsed.drivername == "sqlite" and not Path(parsed.database or "").is_file():
        return Status(database, safe_url(url), None, head(database), True, False, missing=True)
    source = engine(url)
    try:
        async with source.connect() as connection:
            return await connection.run_sync(_status, database, url)
    finally:
        await source.dispose()


async def check(url: str, database: Database) -> None:
    """Refuse (SchemaError) a database that is not at the code's head revision: for a
    process that shares it with others and so may not upgrade it itself."""
    found = await status(url, database)
    if not found.current:
        raise SchemaError(found.describe())
