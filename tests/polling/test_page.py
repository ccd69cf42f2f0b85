"""The live page in a real headless Chromium: it long-polls, and changes made through the
page, and through another process, arrive without a reload."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sdlab.polling import Delays
from sdlab.polling.service import ServiceProcess

pytestmark = pytest.mark.slow  # two service processes and a browser

# Long enough that the page's next poll is parked before the next change, even on a
# busy machine: each status then arrives as an update of its own.
STEP = Delays(to_do=1.0, in_progress=1.0)


@pytest.fixture
def two_processes(mysql_db: str, redis_url: str) -> Iterator[tuple[ServiceProcess, ...]]:
    with (
        ServiceProcess(mysql_db, redis_url=redis_url, delays=STEP) as one,
        ServiceProcess(mysql_db, redis_url=redis_url, delays=STEP) as other,
    ):
        yield one, other


def row(server_id: str, status: str = "") -> str:
    where = f'tr[data-server="{server_id}"]'
    return f'{where}[data-status="{status}"]' if status else where


async def test_the_page_shows_changes_as_they_happen(
    page: Any, two_processes: tuple[ServiceProcess, ...]
) -> None:
    one, other = two_processes
    await page.goto(one.url)
    for i in range(1, 6):
        await page.wait_for_selector(row(f"server-{i}", "NOT_YET_CREATED"))
    await page.wait_for_selector('#live[data-state="live"]')
    await page.evaluate("window.loadedOnce = true")  # gone if the page reloads

    await page.click(f"{row('server-1')} button")  # Create, through the page
    await page.wait_for_selector(row("server-1", "DONE"), timeout=30_000)
    seen = await page.evaluate("window.seen.filter(s => s.startsWith('server-1:'))")
    assert seen == [
        "server-1:NOT_YET_CREATED",
        "server-1:TO_DO",
        "server-1:IN_PROGRESS",
        "server-1:DONE",
    ]
    assert await page.text_content(f"{row('server-1')} button") == "Terminate"

    async with httpx.AsyncClient() as http:  # a change made through the other process
        created = await http.post(f"{other.url}/create/server-2")
    assert created.status_code == 202
    await page.wait_for_selector(row("server-2", "DONE"), timeout=30_000)
    assert "server-2:TO_DO" in await page.evaluate("window.seen")
    version = int(await page.text_content("#version"))
    assert version == created.json()["version"] + 2
    assert await page.evaluate("window.loadedOnce") is True


async def test_the_page_says_when_a_create_is_refused(
    page: Any, two_processes: tuple[ServiceProcess, ...]
) -> None:
    one, other = two_processes
    await page.goto(one.url)
    await page.wait_for_selector(row("server-3", "NOT_YET_CREATED"))
    async with httpx.AsyncClient() as http:
        await http.post(f"{other.url}/create/server-3")
    # The click races the page's own update: force it, as a user with a stale page would.
    await page.evaluate("act(document.querySelector('tr[data-server=\"server-3\"]'))")
    await page.wait_for_selector("#error:has-text('is being created')")


async def test_the_page_reconnects_after_its_server_restarts(
    page: Any, mysql_db: str, redis_url: str
) -> None:
    service = ServiceProcess(mysql_db, redis_url=redis_url, delays=STEP)
    with service:
        await page.goto(service.url)
        await page.wait_for_selector('#live[data-state="live"]')
        service.stop()
        await page.wait_for_selector('#live[data-state="reconnecting"]')
        service.start()  # same port, same database
        await page.wait_for_selector('#live[data-state="live"]', timeout=30_000)
        async with httpx.AsyncClient() as http:
            created = await http.post(f"{service.url}/create/server-4")
        assert created.status_code == 202
        await page.wait_for_selector(row("server-4", "TO_DO"), timeout=30_000)
