"""`callgate audit verify | export | tail | new`: the audit log for auditors and operators.

verify, export and tail read a SQLite file or, through `--config`, the PostgreSQL database
of `audit.url`: one chain for every gateway writing there. `new` starts a new SQLite file
after an archived one; a log on PostgreSQL is one chain for the fleet and is not restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn, TypeVar

import click
from sqlalchemy.exc import SQLAlchemyError

from gateway.audit.chain import Database, Report, start_after, verify
from gateway.audit.export import as_utc, export, follow
from gateway.audit.postgres_reader import read_postgres
from gateway.config import POSTGRESQL_PREFIX, ConfigError, load_audit_config
from gateway.policy.recorded_inputs import policy_input_line
from gateway.store import migrate
from gateway.store.engine import safe_url
from gateway.store.sqlite import connect_sync

_FILE = click.Path(dir_okay=False, path_type=Path)


T = TypeVar("T")


def _audit_log(config_path: Path | None, db_path: Path | None) -> Path | str:
    """The SQLite file, or the PostgreSQL URL, of the audit log."""
    if (config_path is None) == (db_path is None):
        raise click.UsageError("give exactly one of --config or --db")
    if db_path is not None:
        return db_path
    assert config_path is not None
    try:
        config = load_audit_config(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"{config_path}: {problem}", err=True)
        sys.exit(2)
    if config.url.startswith(POSTGRESQL_PREFIX):
        return config.url
    return config.path


def _read(source: Path | str, work: Callable[[Database], T]) -> T:
    """`work` on a connection to the audit log; exits 2 when it cannot be read."""
    if isinstance(source, str):
        try:
            return asyncio.run(read_postgres(source, work))
        except (SQLAlchemyError, OSError, migrate.SchemaError) as exc:
            reason = getattr(exc, "orig", None) or exc
            _unreadable(f"{safe_url(source)}: {reason}")
    db = _open(source)
    try:
        return work(db)
    except sqlite3.Error as exc:
        _unreadable(exc)
    finally:
        db.close()


def _open(path: Path) -> sqlite3.Connection:
    try:
        return connect_sync(path)
    except (OSError, sqlite3.Error) as exc:
        click.echo(f"cannot open the audit log: {exc}", err=True)
        sys.exit(2)


def _source(func: click.decorators.FC) -> click.decorators.FC:
    func = click.option("--db", "db_path", type=_FILE, help="the audit SQLite file")(func)
    return click.option(
        "--config", "config_path", type=_FILE, help="callgate.yaml (its audit.url)"
    )(func)


def _unreadable(exc: object) -> NoReturn:
    click.echo(f"cannot read the audit log: {exc}", err=True)
    sys.exit(2)


def _walk(source: Path | str) -> Report:
    return _read(source, verify)


@click.group()
def audit() -> None:
    """Check, export and follow the hash-chained audit log."""


@audit.command("verify")
@_source
def verify_command(config_path: Path | None, db_path: Path | None) -> None:
    """Check the whole chain; name the first broken record, list calls without outcome.

    Exits 1 when the chain is broken, 0 when it is intact (incomplete calls included).
    """
    report = _walk(_audit_log(config_path, db_path))
    if report.broken is not None:
        broken = report.broken
        click.echo(
            f"broken at record {broken.seq} ({broken.kind}): {broken.detail}; "
            f"{report.records} records before it are intact"
        )
        sys.exit(1)
    line = f"ok {report.records} records, head {report.head}"
    if report.continues_from:
        line += f" (continues from {report.continues_from})"
    click.echo(line)
    for intent in report.incomplete:
        click.echo(
            f"incomplete: record {intent['seq']} {intent['time']} request {intent['request_id']}"
            f" agent {intent['agent']} {intent['method']} {intent['tool']}{intent['path']}:"
            " intent without an outcome (still running, or the gateway stopped mid-call)"
        )


@audit.command("export")
@_source
@click.option("--since", help="ISO 8601 time (inclusive); no zone means UTC")
@click.option("--until", help="ISO 8601 time (exclusive)")
@click.option("--agent", help="only this agent's records")
@click.option("--tool", help="only this tool's records")
@click.option("--output", type=_FILE, help="write here instead of stdout")
@click.option(
    "--format",
    "form",
    type=click.Choice(["jsonl", "policy-input"]),
    default="jsonl",
    show_default=True,
    help="jsonl: the records; policy-input: decisions as policy inputs for `policy replay`",
)
def export_command(
    config_path: Path | None,
    db_path: Path | None,
    since: str | None,
    until: str | None,
    agent: str | None,
    tool: str | None,
    output: Path | None,
    form: str,
) -> None:
    """Write records as JSON Lines (each with its prev_hash and hash), for a SIEM; or,
    with --format policy-input, the decisions as inputs to replay against a policy."""
    for name, value in (("--since", since), ("--until", until)):
        try:
            if value is not None:
                as_utc(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint=name) from None

    def write(db: Database) -> None:
        entries = export(db, since=since, until=until, agent=agent, tool=tool)
        if form == "policy-input":
            entries = _as_policy_inputs(entries)
        if output is None:
            for entry in entries:
                sys.stdout.write(entry + "\n")
        else:
            with output.open("w", encoding="utf-8") as out:
                for entry in entries:
                    out.write(entry + "\n")

    _read(_audit_log(config_path, db_path), write)


def _as_policy_inputs(entries: Iterator[str]) -> Iterator[str]:
    for entry in entries:
        replayable = policy_input_line(json.loads(entry))
        if replayable is not None:
            yield json.dumps(replayable, ensure_ascii=False, separators=(",", ":"))


@audit.command("tail")
@_source
@click.option("-n", "--lines", "last", default=10, show_default=True, type=click.IntRange(0))
@click.option("--interval", default=0.5, show_default=True, type=click.FloatRange(0.01))
def tail_command(
    config_path: Path | None, db_path: Path | None, last: int, interval: float
) -> None:
    """Print the last records, then each new one as it is written, until interrupted."""

    def print_each(db: Database) -> None:
        for entry in follow(db, last, interval):
            click.echo(entry)

    with contextlib.suppress(KeyboardInterrupt):
        _read(_audit_log(config_path, db_path), print_each)


@audit.command("new")
@_source
@click.option("--after", "archive", type=_FILE, required=True, help="the archived audit file")
def new_command(config_path: Path | None, db_path: Path | None, archive: Path) -> None:
    """Start a new, empty audit file whose first record links to an archive's head.

    Stop the gateway, move its audit file away (that is the archive), run this, start it.
    """
    target = _audit_log(config_path, db_path)
    if isinstance(target, str):
        raise click.UsageError(
            "audit.url is PostgreSQL: its log is one chain for every gateway and is not "
            "restarted; `audit new` starts a SQLite file"
        )
    report = _walk(archive)
    if report.broken is not None:
        click.echo(f"{archive}: the archive's chain is broken: {report.broken.detail}", err=True)
        sys.exit(1)
    if target.exists() and target.resolve() == archive.resolve():
        raise click.UsageError("the new audit file must not be the archive")
    try:
        asyncio.run(migrate.upgrade(migrate.sqlite_url(target), migrate.AUDIT))
    except (migrate.SchemaError, SQLAlchemyError) as exc:
        click.echo(f"{target}: {exc}", err=True)
        sys.exit(2)
    db = sqlite3.connect(target, isolation_level=None)
    try:
        start_after(db, report, archive.name)
    except (ValueError, sqlite3.Error) as exc:
        click.echo(f"{target}: {exc}", err=True)
        sys.exit(2)
    finally:
        db.close()
    click.echo(f"ok {target} continues {archive} from record {report.last_seq}, head {report.head}")
