"""The store counts a batch once, however often it is delivered, and reads back as asked."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from sdlab import sql
from sdlab.hashtags.posts import Post, Posts, Tagged
from sdlab.hashtags.store import BadCursor, Delivered, Store, window_minutes


def tagged(post_id: int, text: str, created: float = 1_800_000_000.0) -> Tagged:
    return Tagged.of(Post(post_id, 1, text, created))


async def test_a_batch_delivered_again_is_not_counted_again(store: Store) -> None:
    batch = [
        Delivered(tagged(1, "#Python and #rust"), 0, 0),
        Delivered(tagged(2, "#python again"), 0, 1),
        Delivered(tagged(3, "#Rust #go"), 1, 0),
    ]
    first = await store.add(batch, topic="t", group="g")
    assert (first.posts, first.mentions, first.skipped) == (3, 5, 0)
    again = await store.add(batch, topic="t", group="g")
    assert (again.posts, again.mentions, again.skipped) == (0, 0, 3)
    assert await store.totals() == {"python": 2, "rust": 2, "go": 1}
    assert await store.consumed("t", "g") == {0: 2, 1: 1}


async def test_a_post_sent_twice_at_two_offsets_counts_once(store: Store) -> None:
    """The extractor killed between sending and acking sends the post again, later."""
    post = tagged(9, "#once")
    await store.add([Delivered(post, 0, 0)], topic="t", group="g")
    await store.add([Delivered(post, 0, 5), Delivered(post, 0, 6)], topic="t", group="g")
    assert await store.totals() == {"once": 1}
    # and on RabbitMQ, without offsets, the post ids alone hold it
    await store.add([Delivered(post), Delivered(post)])
    assert await store.totals() == {"once": 1}


async def test_display_is_the_first_seen_and_recent_posts_newest_first(store: Store) -> None:
    await store.add([Delivered(tagged(1, "#PyThOn", 1_800_000_000.0))])
    await store.add([Delivered(tagged(2, "#python", 1_800_000_060.0))])
    view = await store.tag("#PYTHON")
    assert view is not None
    assert (view.display, view.count) == ("PyThOn", 2)
    assert [p.id for p in view.recent] == [2, 1]
    assert view.first_seen == datetime.fromtimestamp(1_800_000_000, UTC)
    assert await store.tag("never") is None


async def test_top_pages_with_a_cursor_through_every_tag(store: Store) -> None:
    posts = Posts(seed=3, tags=50)
    batch = [Delivered(Tagged.of(posts.next())) for _ in range(300)]
    await store.add(batch)
    expected = Counter(tag.key for d in batch for tag in d.tagged.tags)
    seen, cursor = [], None
    while True:
        page = await store.top(limit=7, cursor=cursor)
        seen += page.tags
        if page.cursor is None:
            break
        cursor = page.cursor
    assert {t.key: t.count for t in seen} == dict(expected)
    assert [t.count for t in seen] == sorted((t.count for t in seen), reverse=True)
    with pytest.raises(BadCursor):
        await store.top(cursor="not-a-cursor")


async def test_trending_is_growth_against_the_window_before(store: Store) -> None:
    now = datetime(2027, 1, 15, 12, 0, 30, tzinfo=UTC).timestamp()
    batch, post_id = [], 0
    for tag, before, recent in [("steady", 30, 30), ("rising", 2, 20), ("falling", 40, 5)]:
        for i in range(before + recent):
            post_id += 1
            at = now - 20 * 60 + 60 if i < before else now - 60  # the window before, or now
            batch.append(Delivered(tagged(post_id, f"#{tag}", at)))
    await store.add(batch)
    trends = await store.trending(window=15, now=datetime.fromtimestamp(now, UTC))
    assert [t.key for t in trends] == ["rising", "steady", "falling"]
    rising = trends[0]
    assert (rising.now, rising.before) == (20, 2)
    assert rising.growth == pytest.approx(30 / 12, abs=1e-3)


def test_windows_are_minutes_or_hours() -> None:
    assert window_minutes("15m") == 15
    assert window_minutes("2h") == 120
    for bad in ["", "15", "0m", "25h", "1d", "-5m", "1.5h"]:
        with pytest.raises(ValueError, match="window"):
            window_minutes(bad)


async def test_old_minutes_roll_up_into_hours(store: Store) -> None:
    old = datetime(2020, 1, 1, 10, 0, tzinfo=UTC).timestamp()
    await store.add([Delivered(tagged(i, "#old", old + i * 60)) for i in range(1, 4)])
    await store.add([Delivered(tagged(10, "#new"))])
    assert await store.roll_up() == 3
    rows = await store.db.fetch("SELECT key, count FROM tag_hours")
    assert rows == [("old", 3)]
    assert await store.totals() == {"old": 3, "new": 1}


async def test_the_store_is_postgresql(mysql_db: str) -> None:
    async with sql.Database(mysql_db) as db:
        with pytest.raises(sql.UnknownDatabase, match="PostgreSQL"):
            Store(db)
