"""The real headless Chromium (Debian's `chromium`, driven by Playwright) for the
approvers' page tests, axe-core checks in it, and where screenshots go."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("CALLGATE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Screenshots of the browser tests (gitignored); CALLGATE_ARTIFACTS moves them.
ARTIFACTS = Path(os.environ.get("CALLGATE_ARTIFACTS") or Path(__file__).parents[1] / "artifacts")

try:
    from axe_playwright_python.async_playwright import Axe  # type: ignore[import-untyped]
    from playwright.async_api import Browser, Page, async_playwright
except ImportError:  # pragma: no cover - the test extra installs them
    async_playwright = None  # type: ignore[assignment]

# .ci/run sets CALLGATE_REQUIRE_BROWSER: there a missing browser fails instead of skipping.
needs_browser = pytest.mark.skipif(
    not os.environ.get("CALLGATE_REQUIRE_BROWSER")
    and (async_playwright is None or not os.path.exists(CHROMIUM)),
    reason=f"browser tests need Playwright and Chromium at {CHROMIUM} "
    "(apt-get install chromium, or set CALLGATE_CHROMIUM); .ci/run installs both",
)


@asynccontextmanager
async def launched() -> AsyncIterator[Browser]:
    """The browser, closed afterwards."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def browser_page(**context: Any) -> AsyncIterator[Page]:
    """A fresh page; `page.dialogs` lists the messages of every dialog a script opened
    (each dismissed, unless `page.accept_dialogs` is set)."""
    async with launched() as browser:
        page = await (await browser.new_context(**context)).new_page()
        page.set_default_timeout(10_000)
        page.dialogs = []  # type: ignore[attr-defined]
        page.accept_dialogs = False  # type: ignore[attr-defined]

        async def answer(dialog: Any) -> None:
            page.dialogs.append(dialog.message)  # type: ignore[attr-defined]
            if page.accept_dialogs:  # type: ignore[attr-defined]
                await dialog.accept()
            else:
                await dialog.dismiss()

        page.on("dialog", answer)
        yield page


async def serious_violations(page: Page) -> list[str]:
    """axe-core's serious and critical violations on the page as it is now."""
    results = await Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {v['help']}: "
        + "; ".join(node["target"][0] for node in v["nodes"][:5])
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


async def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path
