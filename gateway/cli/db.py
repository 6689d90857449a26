"""`callgate db upgrade | current`: the store and audit databases a config names, against
the schema's migrations (docs/operations.md, "Database upgrades")."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click
from sqlalchemy.exc import SQLAlchemyError

from gateway.config import ConfigError, load_database_config
from gateway.store import migrate
from gateway.store.engine import safe_url

_CONFIG = click.Path(dir_okay=False, path_type=Path)


def _databases(config_path: Path) -> list[tuple[str, migrate.Database]]:
    """Read from the `storage` and `audit` sections alone: the rest of the config (the
    agents' and tools' secrets) need not be there."""
    try:
        storage, audit = load_database_config(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"{config_path}: {problem}", err=True)
        sys.exit(2)
    databases = [(storage.url, migrate.STORE)]
    if audit.enabled:
        databases.append((audit.url, migrate.AUDIT))
    return databases


def _failed(database: migrate.Database, url: str, exc: Exception) -> None:
    # A driver's message may quote the URL; the URL shown is the one without its password.
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    click.echo(f"{database.name} database {safe_url(url)}: {detail}", err=True)
    sys.exit(1)


@click.group()
def db() -> None:
    """The store and audit databases' schema: upgrade them, or show where they stand."""


@db.command()
@click.option("--config", "config_path", type=_CONFIG, default="callgate.yaml", show_default=True)
def upgrade(config_path: Path) -> None:
    """Bring the databases to this version's schema (a SQLite file of an earlier release
    included). Run it before starting the new version on PostgreSQL."""
    for url, database in _databases(config_path):
        try:
            before, after = asyncio.run(migrate.upgrade(url, database))
        except (migrate.SchemaError, SQLAlchemyError, OSError) as exc:
            _failed(database, url, exc)
        if before.revision == after.revision:
            click.echo(f"{after.describe()}, already")
        else:
            since = "before migrations" if before.made_before_migrations else "empty"
            click.echo(f"{after.describe()}, from {before.revision or since}")


@db.command()
@click.option("--config", "config_path", type=_CONFIG, default="callgate.yaml", show_default=True)
def current(config_path: Path) -> None:
    """Show each database's revision against this version's head."""
    for url, database in _databases(config_path):
        try:
            found = asyncio.run(migrate.status(url, database))
        except (migrate.SchemaError, SQLAlchemyError, OSError) as exc:
            _failed(database, url, exc)
        click.echo(found.describe())
