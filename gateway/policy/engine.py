"""The contract every policy engine keeps (embedded regorus now, OPA sidecar later)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from gateway.policy.decision import Decision


class PolicyError(Exception):
    """The engine could not produce a decision; the call must fail closed (503)."""


class PolicyLoadError(Exception):
    """A policy set was rejected at load time; `problems` are `file:line: message` lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class PolicyEngine(Protocol):
    @property
    def version(self) -> str:
        """Hash of the loaded policy and data files; empty before the first load."""
        ...

    def load(self, path: Path) -> None:
        """Load and validate a policy folder, replacing the current set only on success."""
        ...

    def decide(self, input_doc: dict[str, Any]) -> Decision:
        """Evaluate the decision rule; raise PolicyError when no decision can be had."""
        ...
