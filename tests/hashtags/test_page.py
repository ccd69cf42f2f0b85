"""The live page in a real headless Chromium, against the service under a real uvicorn:
the trending list shows, follows the counts without a reload as posts are counted, and
follows the window chosen; the top tags refresh by themselves."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sdlab.hashtags import service
from sdlab.hashtags.posts import Post, Tagged
from sdlab.hashtags.store import Delivered, Store
from tests.hashtags.test_service import serving

pytestmark = pytest.mark.slow  # a browser


def posts(first_id: int, text: str, count: int, *, ago: float = 30) -> list[Delivered]:
    at = round(time.time() - ago, 3)
    return [Delivered(Tagged.of(Post(first_id + i, 1, text, at))) for i in range(count)]


@pytest.fixture
async def site(store: Store) -> AsyncIterator[str]:
    async with serving(service.create_app(store.db.url, pool=4, tick=0.2)) as url:
        yield url


async def test_trending_updates_live(page: Any, site: str, store: Store) -> None:
    await store.add(posts(1, "#Launch day", 3))
    await store.add(posts(100, "#steady as ever", 4, ago=10 * 60))  # outside 5m, inside 15m
    await page.goto(site)
    await page.wait_for_selector('#live[data-state="live"]')
    await page.wait_for_selector('#trending[data-window="15m"] tr[data-key="launch"]')
    assert await page.text_content('#trending tr[data-key="launch"] button') == "#Launch"
    assert await page.text_content('#trending tr[data-key="launch"] .now') == "3"
    await page.evaluate("window.loadedOnce = true")  # gone if the page reloads

    await store.add(posts(10, "#comet #launch", 6))
    await page.wait_for_selector('#trending tr[data-key="comet"]')
    await page.wait_for_selector('#trending tr[data-key="launch"] .now:text-is("9")')
    assert await page.evaluate("window.trendingUpdates.at(-1)") == ["launch", "comet", "steady"]

    await page.select_option("#window", "5m")  # steady's posts are 10 minutes old
    await page.wait_for_selector('#trending[data-window="5m"]')
    assert await page.evaluate("window.trendingUpdates.at(-1)") == ["launch", "comet"]
    assert "window=5m" in page.url

    # the top tags poll on their own: a new tag shows without a reload
    assert await page.locator('#top tr[data-key="everywhere"]').count() == 0
    await store.add(posts(200, "#everywhere", 12))
    await page.wait_for_selector('#top tr[data-key="everywhere"]', timeout=10_000)
    assert await page.text_content("#top tbody tr:first-child .count") == "12"
    assert await page.text_content('#top tr[data-key="launch"] .count') == "9"
    await page.wait_for_selector('#stats:text-is("25 posts, 4 tags, 31 mentions")')
    assert await page.evaluate("window.loadedOnce") is True


async def test_a_tag_clicked_shows_its_newest_posts(page: Any, site: str, store: Store) -> None:
    await store.add(posts(2**60, "ship it #Release", 2))
    await page.goto(site)
    await page.click('#trending tr[data-key="release"] button')
    await page.wait_for_selector('#detail[data-key="release"]')
    assert await page.text_content("#detail-tag") == "#Release: 2 mentions"
    assert await page.locator("#detail-posts li").count() == 2
    title = await page.get_attribute("#detail-posts li:first-child", "title")
    assert title == f"post {2**60 + 1}"  # the exact id, from id_str
