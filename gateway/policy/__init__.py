"""Policy engines: the `PolicyEngine` protocol, the decision it returns, how it fails."""

from gateway.policy.decision import Decision, parse_decision
from gateway.policy.engine import PolicyEngine
from gateway.policy.errors import PolicyError, PolicyLoadError

__all__ = ["Decision", "PolicyEngine", "PolicyError", "PolicyLoadError", "parse_decision"]
