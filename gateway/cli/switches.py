"""`callgate switch off TARGET --reason … | on TARGET | list`: kill switches from a terminal
(an approver token with the operator role)."""

from __future__ import annotations

import urllib.parse

import click

from gateway.cli.admin_client import call, connection


def _path(target: str) -> str:
    return "/api/v1/switches/" + urllib.parse.quote(target, safe="")


@click.group()
def switch() -> None:
    """Stop an agent, a tool, both, or everything, within a second on every worker."""


@switch.command("off")
@connection
@click.argument("target", metavar="TARGET")
@click.option("--reason", "-m", required=True, help="why (agents are told)")
def off_command(url: str, token: str, target: str, reason: str) -> None:
    """Engage a switch.

    TARGET is all, read-only, agent:<id>, tool:<name> or agent:<id>,tool:<name>.
    """
    engaged = call(url, token, "PUT", _path(target), {"reason": reason})
    click.echo(f"off: {engaged['target']} ({engaged['reason']})")


@switch.command("on")
@connection
@click.argument("target", metavar="TARGET")
def on_command(url: str, token: str, target: str) -> None:
    """Lift a switch."""
    lifted = call(url, token, "DELETE", _path(target))
    click.echo(f"on: {lifted['target']}")


@switch.command("list")
@connection
def list_command(url: str, token: str) -> None:
    """The switches in force."""
    found = call(url, token, "GET", "/api/v1/switches")
    for engaged in found["switches"]:
        click.echo(
            f"{engaged['target']}  by {engaged['engaged_by']} at {engaged['engaged_at']}: "
            f"{engaged['reason']}"
        )
    if not found["switches"]:
        click.echo("no switches engaged", err=True)
