"""`callgate approvals list | show | approve | deny`: the approvers' API from a terminal."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import click

from gateway.approvals import STATES
from gateway.cli.admin_client import call, connection


def _line(action: dict[str, Any]) -> str:
    request = action["request"]
    left = f"{action['time_left_s']:.0f}s left" if "time_left_s" in action else action["state"]
    return (
        f"{action['id']}  {action['state']:<15} {action['agent']} -> {action['tool']} "
        f"{request['method']} {request['path']}  ({left}) {action['decision']['reason']}"
    )


@click.group()
def approvals() -> None:
    """Work the pending-actions queue (the admin listener's /api/v1/actions)."""


@approvals.command("list")
@connection
@click.option("--status", type=click.Choice(STATES), default="pending", show_default=True)
@click.option("--all", "every", is_flag=True, help="actions in every state")
@click.option("--agent", help="only this agent's actions")
@click.option("--tool", help="only this tool's actions")
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON")
def list_command(
    url: str,
    token: str,
    status: str,
    every: bool,
    agent: str | None,
    tool: str | None,
    as_json: bool,
) -> None:
    """List actions, newest first."""
    query = {k: v for k, v in (("agent", agent), ("tool", tool)) if v}
    if not every:
        query["status"] = status
    found = call(url, token, "GET", "/api/v1/actions?" + urllib.parse.urlencode(query))
    if as_json:
        click.echo(json.dumps(found, indent=2, ensure_ascii=False))
        return
    for action in found["actions"]:
        click.echo(_line(action))
    if not found["actions"]:
        click.echo("no actions", err=True)


@approvals.command("show")
@connection
@click.argument("action_id")
def show_command(url: str, token: str, action_id: str) -> None:
    """One action, whole: request, decision, approvals, result."""
    action = call(url, token, "GET", f"/api/v1/actions/{urllib.parse.quote(action_id)}")
    click.echo(json.dumps(action, indent=2, ensure_ascii=False))


def _decide(url: str, token: str, action_id: str, verdict: str, comment: str) -> None:
    path = f"/api/v1/actions/{urllib.parse.quote(action_id)}/{verdict}"
    action = call(url, token, "POST", path, {"comment": comment})
    line = f"{action['id']}: {action['state']}"
    result = action.get("result") or {}
    if "status" in result:
        line += f" (the tool answered {result['status']})"
    elif "error" in result:
        line += f" ({result['error']}: {result.get('message', '')})"
    click.echo(line)


@approvals.command("approve")
@connection
@click.argument("action_id")
@click.option("--comment", "-m", default="", help="why")
def approve_command(url: str, token: str, action_id: str, comment: str) -> None:
    """Approve; the last approval needed executes the action and prints its outcome."""
    _decide(url, token, action_id, "approve", comment)


@approvals.command("deny")
@connection
@click.argument("action_id")
@click.option("--comment", "-m", required=True, help="why (required: shown to the agent)")
def deny_command(url: str, token: str, action_id: str, comment: str) -> None:
    """Deny: the action is never executed."""
    _decide(url, token, action_id, "deny", comment)
