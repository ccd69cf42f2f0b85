"""The live page in a real headless Chromium, against `sdlab checkin serve` in a process
of its own: a crowd's check-ins fill the map while they run, and one made over the API
shows up without a reload."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import port_for
import pytest

from sdlab.infra import ServerProcess, sdlab_command

pytestmark = pytest.mark.slow  # a service process and a browser


@pytest.fixture
def service(postgres_db: str) -> Iterator[str]:
    port = int(port_for.select_random())
    url = f"http://127.0.0.1:{port}"
    command = sdlab_command("checkin", "serve", "--port", str(port), "--db", postgres_db)
    with ServerProcess(command, ready_url=f"{url}/trips", name="checkin service"):
        yield url


async def test_the_map_fills_while_a_crowd_checks_in(page: Any, service: str) -> None:
    await page.goto(service)
    await page.wait_for_selector('#map[data-taken="0"] .line')
    assert await page.locator("#map .line").count() == 6
    assert await page.locator("#trip option").count() == 8
    await page.evaluate("window.loadedOnce = true")  # gone if the page reloads

    await page.select_option("#strategy", "skip-locked")
    await page.fill("#users", "120")
    await page.fill("#spread", "2")
    await page.click("#go")
    await page.wait_for_selector('#map[data-taken="120"]', timeout=30_000)
    await page.wait_for_selector('#run[data-state="done"]', timeout=30_000)
    counts = await page.evaluate("window.takenCounts")
    assert any(0 < n < 120 for n in counts), f"the map went from empty to full: {counts}"
    assert counts == sorted(counts)
    assert "120 seated" in await page.text_content("#run")
    assert await page.locator("#map .seat.free").count() == 0

    trip = int(await page.eval_on_selector("#trip", "s => s.value"))
    other = trip + 1
    await page.select_option("#trip", str(other))
    await page.wait_for_selector('#map[data-taken="0"]')
    async with httpx.AsyncClient() as http:
        made = await http.post(
            f"{service}/trips/{other}/checkin", json={"user_id": 9, "seat": "7D"}
        )
    assert made.status_code == 201
    await page.wait_for_selector('#map[data-taken="1"] .seat.taken[title="7D"]')
    assert await page.evaluate("window.loadedOnce") is True
