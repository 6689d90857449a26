"""callgate: a policy-enforcing gateway between AI agents and the tool APIs they call."""

__version__ = "0.1.0"
