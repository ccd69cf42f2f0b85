"""The browser the web-page tests drive: a real Chromium that runs the page's scripts."""

from __future__ import annotations

from typing import Any


async def test_the_browser_runs_scripts(page: Any) -> None:
    await page.set_content("<p id=out>static</p><script>out.textContent = 'scripted'</script>")
    assert await page.text_content("#out") == "scripted"
