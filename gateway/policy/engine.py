"""The contract every policy engine keeps: embedded regorus, and OPA as a sidecar."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from gateway.policy.decision import Decision

if TYPE_CHECKING:
    from gateway.policy.loader import PolicySet


class PolicyEngine(Protocol):
    name: str  # embedded | opa

    @property
    def policy_version(self) -> str:
        """The served set's version (files hash, or OPA's bundle revision); empty before
        the first load."""
        ...

    @property
    def reads_files(self) -> bool:
        """Whether the engine serves the policy folder (else OPA's own bundles)."""
        ...

    async def activate(self, policy_set: PolicySet | None) -> None:
        """Compile the set and run its Rego tests; if both succeed, serve it from now on.
        On PolicyLoadError (compile errors, failing tests) the previous set keeps serving.
        None (engines that do not read files): check the engine can decide."""
        ...

    async def evaluate(self, input_doc: dict[str, Any]) -> Decision:
        """The decision for one call; PolicyError when none can be had."""
        ...

    async def close(self) -> None: ...
