"""`callgate tools changes TOOL | accept TOOL NAME DIGEST | reject TOOL NAME DIGEST`: the
MCP tool definitions that changed since they were pinned, from a terminal (accepting and
rejecting need an approver token with the operator role)."""

from __future__ import annotations

import urllib.parse

import click

from gateway.cli.admin_client import call, connection


def _path(tool: str, *rest: str) -> str:
    parts = [urllib.parse.quote(part, safe="") for part in (tool, *rest)]
    return "/api/v1/tools/" + parts[0] + "/changes" + "".join("/" + p for p in parts[1:])


@click.group()
def tools() -> None:
    """Review changed MCP tool definitions."""


@tools.command("changes")
@connection
@click.argument("tool")
def changes_command(url: str, token: str, tool: str) -> None:
    """The changed definitions of TOOL's MCP tools, each with its diff."""
    found = call(url, token, "GET", _path(tool))
    for change in found["changes"]:
        click.echo(
            f"{change['name']}: {change['status']}, pinned {change['pinned']['digest']} "
            f"({change['pinned']['by']}), seen {change['seen']['digest']} at "
            f"{change['seen']['at']}"
        )
        click.echo(change["diff"])
    if not found["changes"]:
        click.echo(f"no changed tool definitions on {tool}", err=True)


def _decide(
    url: str, token: str, tool: str, name: str, digest: str, verb: str, comment: str
) -> None:
    pin = call(url, token, "POST", _path(tool, name, verb), {"digest": digest, "comment": comment})
    click.echo(f"{pin['name']}: {pin['status']} (pinned {pin['pinned']['digest']})")


@tools.command("accept")
@connection
@click.argument("tool")
@click.argument("name")
@click.argument("digest")
@click.option("--comment", "-m", default="", help="why (audited)")
def accept_command(url: str, token: str, tool: str, name: str, digest: str, comment: str) -> None:
    """Pin the definition of NAME seen with DIGEST (as `changes` shows it)."""
    _decide(url, token, tool, name, digest, "accept", comment)


@tools.command("reject")
@connection
@click.argument("tool")
@click.argument("name")
@click.argument("digest")
@click.option("--comment", "-m", default="", help="why (audited)")
def reject_command(url: str, token: str, tool: str, name: str, digest: str, comment: str) -> None:
    """Refuse the definition of NAME seen with DIGEST: the tool stays held."""
    _decide(url, token, tool, name, digest, "reject", comment)
