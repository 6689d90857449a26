"""Fixtures shared by the approvals tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.support.sso import SsoGateway, start_sso_gateway


@pytest.fixture
async def sso_gateway(tmp_path: Any, start_upstream: Any) -> AsyncIterator[Any]:
    """start(**overrides): a gateway whose approvers sign in through the test provider."""
    clients: list[TestClient] = []

    async def start(**overrides: Any) -> SsoGateway:
        return await start_sso_gateway(tmp_path, start_upstream, clients, **overrides)

    yield start
    for client in clients:
        await client.close()
