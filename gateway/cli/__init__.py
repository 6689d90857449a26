"""The `callgate` command: its groups are the modules beside this one."""

from __future__ import annotations

import os

# regorus (Rust) would otherwise capture a backtrace for every error it returns.
os.environ.setdefault("RUST_LIB_BACKTRACE", "0")

import sys
from pathlib import Path

import click

from gateway.cli.approvals import approvals
from gateway.cli.audit import audit
from gateway.cli.db import db
from gateway.cli.policy import policy
from gateway.cli.switches import switch
from gateway.cli.tools import tools
from gateway.config import Config, ConfigError, load_config
from gateway.observability.logs import configure_logging
from gateway.openapi.document import SpecError
from gateway.policy.errors import PolicyLoadError
from gateway.store.migrate import SchemaError
from gateway.workers import problems, supervise

CONFIG_FILE = click.Path(exists=False, dir_okay=False, path_type=Path)


def _load_or_exit(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"{path}: {problem}", err=True)
        sys.exit(2)


def _shareable_or_exit(path: Path, config: Config) -> None:
    found = problems(config)
    for problem in found:
        click.echo(f"{path}: {problem}", err=True)
    if found:
        sys.exit(2)


@click.group()
@click.version_option(package_name="callgate")
def main() -> None:
    """callgate: the policy gateway between AI agents and their tools."""


@main.command()
@click.option("--config", "config_path", type=CONFIG_FILE, required=True, help="callgate.yaml")
@click.option("--log-level", default="INFO", show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="gateway processes on the same ports (needs PostgreSQL and Redis past 1)",
)
def serve(config_path: Path, log_level: str, workers: int) -> None:
    """Serve the agent and admin listeners."""
    from gateway.serve import run, serve_until_stopped

    config = _load_or_exit(config_path)
    configure_logging(log_level.upper())
    if workers > 1:
        _shareable_or_exit(config_path, config)
        sys.exit(supervise(config_path, log_level, workers))
    try:
        run(serve_until_stopped(config))
    except SchemaError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    except PolicyLoadError as exc:
        for problem in exc.problems:
            click.echo(f"policy: {problem}", err=True)
        sys.exit(2)
    except SpecError as exc:
        for problem in exc.problems:
            click.echo(f"{config_path}: {problem}", err=True)
        sys.exit(2)
    except OSError as exc:
        click.echo(f"cannot listen: {exc}", err=True)
        sys.exit(2)


@main.group()
def config() -> None:
    """Work with callgate.yaml."""


@config.command("check")
@click.argument("path", type=CONFIG_FILE)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="gateway processes that will serve it (workers times replicas)",
)
def config_check(path: Path, processes: int) -> None:
    """Validate a config file, its tools' OpenAPI documents and its policies (they compile
    and their Rego tests pass, as a reload requires) without serving."""
    import asyncio

    from gateway.openapi.specs import ToolSpecs
    from gateway.policy.embedded import EmbeddedEngine
    from gateway.policy.loader import read_policy_dir

    cfg = _load_or_exit(path)
    if processes > 1:
        _shareable_or_exit(path, cfg)
    try:
        asyncio.run(ToolSpecs(cfg.tools).load())
    except SpecError as exc:
        for problem in exc.problems:
            click.echo(f"{path}: {problem}", err=True)
        sys.exit(2)
    where = f"policies in {cfg.policy.path}"
    if cfg.policy.engine == "opa":
        where = f"policies on OPA at {cfg.policy.opa_url} (compiled and tested by OPA when served)"
    else:
        try:
            engine = EmbeddedEngine(cfg.policy.decision_rule)
            asyncio.run(engine.activate(read_policy_dir(cfg.policy.path)))
            asyncio.run(engine.close())
        except PolicyLoadError as exc:
            for problem in exc.problems:
                click.echo(f"policy: {problem}", err=True)
            sys.exit(2)
    click.echo(f"ok: {len(cfg.agents)} agents, {len(cfg.tools)} tools, {where}")


main.add_command(audit)
main.add_command(db)
main.add_command(policy)
main.add_command(approvals)
main.add_command(switch)
main.add_command(tools)
