"""The real headless Chromium (Debian's `chromium`, driven by Playwright) for the
approvers' page tests, and the skip that .ci/run turns into a failure."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest

CHROMIUM = os.environ.get("CALLGATE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"

try:
    from playwright.async_api import Browser, async_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    async_playwright = None  # type: ignore[assignment]

# .ci/run sets CALLGATE_REQUIRE_BROWSER: there a missing browser fails instead of skipping.
needs_browser = pytest.mark.skipif(
    not os.environ.get("CALLGATE_REQUIRE_BROWSER")
    and (async_playwright is None or not os.path.exists(CHROMIUM)),
    reason=f"browser tests need Playwright and Chromium at {CHROMIUM} "
    "(apt-get install chromium, or set CALLGATE_CHROMIUM); .ci/run installs both",
)


async def chromium() -> AsyncIterator[Browser]:
    """A browser for one test (use as an async generator fixture)."""
    async with async_playwright() as playwright:
        browser: Any = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            await browser.close()
