"""Idempotency-Key tests: a counting tool, a gateway config with idempotency settings, and
an agent's headers carrying a key."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.config import Config
from tests.support.gateway import auth, make_config


class Counter:
    """A tool that counts calls, takes `delay_s`, and answers 201 with a serial number."""

    def __init__(self, delay_s: float = 0) -> None:
        self.calls: list[tuple[str, str, bytes]] = []
        self.delay_s = delay_s

    def app(self) -> web.Application:
        async def handler(request: web.Request) -> web.Response:
            body = await request.read()
            self.calls.append((request.path, request.headers.get("Idempotency-Key", ""), body))
            serial = len(self.calls)
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            return web.json_response(
                {"charge": serial}, status=201, headers={"X-Charge": str(serial)}
            )

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        return app


def config_for(tmp_path: Path, url: str, **settings: Any) -> Config:
    tool = settings.pop("tool", None)
    config = make_config(tmp_path, url, tool=tool)
    return config.model_copy(
        update={
            "idempotency": config.idempotency.model_copy(update=settings),
            "limits": config.limits.model_copy(update={"loop": None}),
        }
    )


def keyed(key: str) -> dict[str, str]:
    return {**auth(), "Idempotency-Key": key}
