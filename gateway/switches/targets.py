"""What a kill switch can cover: `all`, `read-only`, `agent:<id>`, `tool:<name>` or
`agent:<id>,tool:<name>`."""

from __future__ import annotations

import re

_NAME = r"([A-Za-z0-9][A-Za-z0-9._-]*)"  # as agent ids and tool names are (config.py)
_TARGET = re.compile(rf"all|read-only|agent:{_NAME}|tool:{_NAME}|agent:{_NAME},tool:{_NAME}")


def check_target(target: str, agents: set[str] | None = None, tools: set[str] | None = None) -> str:
    """The target if it is well formed and (when `agents` and `tools` are given) names
    configured agents and tools. Engaging checks the names; lifting does not, so a switch
    left over for an agent or tool removed from the config can still be lifted.

    Raises ValueError with what is wrong.
    """
    match = _TARGET.fullmatch(target)  # not match(): `$` also matches before a newline
    if match is None:
        raise ValueError(
            "a switch target is all, read-only, agent:<id>, tool:<name> or agent:<id>,tool:<name>"
        )
    agent = match.group(1) or match.group(3)
    tool = match.group(2) or match.group(4)
    if agents is not None and agent is not None and agent not in agents:
        raise ValueError(f"no agent {agent!r} is configured")
    if tools is not None and tool is not None and tool not in tools:
        raise ValueError(f"no tool {tool!r} is configured")
    return target
