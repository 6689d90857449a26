"""What goes wrong with policies: no decision for a call, or a set that cannot be served."""

from __future__ import annotations


class PolicyError(Exception):
    """The engine could not produce a decision; the call must fail closed (503)."""


class PolicyLoadError(Exception):
    """A policy set was rejected at load time; `problems` are `file:line: message` lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
