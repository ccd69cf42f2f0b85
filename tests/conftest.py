"""Every test gets real servers through sdlab's own pytest plugin."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sdlab.config import settings

pytest_plugins = ["sdlab.infra.pytest_plugin"]


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A state directory of the test's own (for `up`/`down` without touching .sdlab/)."""
    path = tmp_path / "state"
    monkeypatch.setenv("SDLAB_STATE_DIR", str(path))
    settings.cache_clear()
    yield path
    settings.cache_clear()


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest_asyncio.fixture
async def page() -> AsyncIterator[Any]:
    """A page in a real headless Chromium (Debian's `chromium`, driven by Playwright).

    `make test` installs the package (`sdlab infra up --install`); Playwright downloads
    no browser of its own."""
    from playwright.async_api import async_playwright

    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is not installed: `sdlab infra up --install` installs it (as root)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            yield await browser.new_page()
        finally:
            await browser.close()
