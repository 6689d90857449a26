"""Bearer token -> principal (gateway/principals.py): one lookup by the token's SHA-256,
whatever the number of agents."""

from __future__ import annotations

import hashlib

from gateway.config import Principal
from gateway.principals import AgentDirectory


def _agent(i: int) -> Principal:
    digest = hashlib.sha256(f"token-{i}".encode()).hexdigest()
    return Principal(id=f"agent-{i}", token_sha256=digest, roles=("r",))


def test_each_of_many_agents_is_found_by_its_own_token_and_no_other() -> None:
    directory = AgentDirectory(tuple(_agent(i) for i in range(2000)))
    for i in (0, 1, 999, 1999):
        found = directory.find(f"token-{i}")
        assert found is not None and found.id == f"agent-{i}"
    for token in ("", "token-2000", "token-1 ", "TOKEN-1"):
        assert directory.find(token) is None
