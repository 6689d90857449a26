"""The compiled documents of every tool with `openapi`, read at start and again on reload.

At start every document must load, or the gateway does not start (`SpecError` naming each
problem). A reload (SIGHUP, `POST /api/v1/policies/reload`, a change to a document's file
with `policy.watch`) reads them all again; a tool whose document no longer loads keeps its
last good one, and the problems are returned for the caller to log, audit and show.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import watchfiles

from gateway.config import Tool
from gateway.openapi.document import SpecError, is_url, read_source
from gateway.openapi.operations import Spec

log = logging.getLogger(__name__)

WATCH_DEBOUNCE_MS = 300  # editors save in several steps; wait for the last one
WATCH_RETRY_S = 5.0


async def compile_spec(tool: Tool) -> Spec:
    """The tool's document, read and compiled; SpecError naming the tool if unusable."""
    assert tool.openapi is not None
    try:
        text = await read_source(tool.openapi)
        # Compiling a large document takes a while: off the event loop.
        return await asyncio.to_thread(Spec, tool.openapi, text, tool.upstream)
    except SpecError as exc:
        raise SpecError([f"tools[{tool.name}].openapi: {p}" for p in exc.problems]) from None


class ToolSpecs:
    def __init__(self, tools: Iterable[Tool]) -> None:
        self._tools = [tool for tool in tools if tool.openapi is not None]
        self._specs: dict[str, Spec] = {}
        self._reloading = asyncio.Lock()  # one reload at a time (API, SIGHUP, watch)

    def of(self, tool: str) -> Spec | None:
        return self._specs.get(tool)

    async def load(self) -> None:
        """Every document, or SpecError naming every problem (nothing is served then)."""
        results = await asyncio.gather(
            *(compile_spec(tool) for tool in self._tools), return_exceptions=True
        )
        problems: list[str] = []
        for result in results:
            if isinstance(result, SpecError):
                problems += result.problems
            elif isinstance(result, BaseException):
                raise result
        if problems:
            raise SpecError(problems)
        self._specs = {
            tool.name: spec
            for tool, spec in zip(self._tools, results, strict=True)
            if isinstance(spec, Spec)
        }

    async def reload(self) -> tuple[list[str], list[str]]:
        """Read every document again: (the tools whose document changed, the problems of
        those that keep their last good one)."""
        async with self._reloading:
            return await self._reload()

    async def _reload(self) -> tuple[list[str], list[str]]:
        changed: list[str] = []
        problems: list[str] = []
        for tool in self._tools:
            try:
                spec = await compile_spec(tool)
            except SpecError as exc:
                problems += exc.problems
                continue
            old = self._specs.get(tool.name)
            if old is None or old.version != spec.version:
                self._specs[tool.name] = spec
                changed.append(tool.name)
        return changed, problems

    def status(self) -> dict[str, Any]:
        """Which document each typed tool serves (`GET /api/v1/policies`)."""
        return {
            name: {
                "source": spec.source,
                "version": spec.version,
                "operations": len(spec.operations),
            }
            for name, spec in self._specs.items()
        }

    async def changes(self) -> AsyncIterator[None]:
        """Once per change in a folder holding a document file (a ConfigMap volume swaps
        hidden folders, not the file, so any change counts); nothing without such files."""
        folders = sorted(
            {Path(t.openapi).parent for t in self._tools if t.openapi and not is_url(t.openapi)}
        )
        if not folders:
            return
        while True:
            try:
                async for _changes in watchfiles.awatch(*folders, debounce=WATCH_DEBOUNCE_MS):
                    yield
            except Exception as exc:  # a folder is gone or unreadable: look again later
                log.error("cannot watch the OpenAPI documents' folders", extra={"error": repr(exc)})
            await asyncio.sleep(WATCH_RETRY_S)
