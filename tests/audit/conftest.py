"""Fixtures of the audit tests that run the gateway as real processes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web


@pytest.fixture
async def slow_upstream(start_upstream: Any) -> tuple[str, list[str]]:
    """An upstream that notes each call's X-Request-Id and takes 20 ms to answer, so
    that a kill lands while calls are in flight."""
    reached: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        reached.append(request.headers["X-Request-Id"])
        await request.read()
        await asyncio.sleep(0.02)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return await start_upstream(app), reached
