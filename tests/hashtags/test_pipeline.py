"""The stages in one process, on each broker: the counts equal a direct count of the posts."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from sdlab import brokers
from sdlab.brokers import Broker
from sdlab.hashtags import pipeline
from sdlab.hashtags.pipeline import Progress, Topics
from sdlab.hashtags.posts import Post, Posts, Tagged
from sdlab.hashtags.store import Store
from tests.helpers import eventually


def direct_count(posts: list[Post]) -> Counter[str]:
    return Counter(tag.key for post in posts for tag in Tagged.of(post).tags)


async def settled(store: Store, expected: Counter[str], timeout: float = 60) -> dict[str, int]:
    return await eventually(store.totals, dict(expected), timeout)


@asynccontextmanager
async def running(*stages: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(stage) for stage in stages]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_the_pipeline_counts_every_tag_exactly(
    broker: Broker, topics: Topics, store: Store
) -> None:
    posts = list(itertools.islice(Posts(seed=11), 1500))
    progress = Progress()
    async with running(
        pipeline.extract(broker, topics), pipeline.count(broker, store, topics, progress=progress)
    ):
        assert await pipeline.generate(broker, topics, posts) == 1500
        assert await settled(store, direct_count(posts)) == dict(direct_count(posts))
        tagged = sum(1 for p in posts if Tagged.of(p).tags)
        assert (await store.summary())["posts"] == tagged

        async def counted() -> int:  # the stage's tally follows its commit and its acks
            return progress.counted

        assert await eventually(counted, tagged) == tagged


async def test_a_message_that_is_not_a_post_is_skipped_not_a_stop(
    broker: Broker, topics: Topics, store: Store
) -> None:
    posts = list(itertools.islice(Posts(seed=12), 50))
    extracted, counted = Progress(), Progress()
    async with running(
        pipeline.extract(broker, topics, progress=extracted),
        pipeline.count(broker, store, topics, progress=counted),
    ):
        await broker.publish(topics.posts, b"not json at all", key="x")
        await broker.publish(topics.posts, b'{"id": 1}', key="y")  # fields missing
        await broker.publish(topics.tagged, b'{"post": {}}', key="z")
        await pipeline.generate(broker, topics, posts)
        assert await settled(store, direct_count(posts)) == dict(direct_count(posts))
        assert (extracted.refused, counted.refused) == (2, 1)


async def test_a_batch_waits_no_longer_than_max_wait(store: Store) -> None:
    """Two messages and a batch of 100: they are handed over after max_wait, not never."""

    class Fake:
        def __init__(self, body: bytes) -> None:
            self.body, self.partition, self.offset = body, None, None

    async def trickle() -> AsyncIterator[brokers.Message]:
        for i in range(2):
            yield Fake(Tagged.of(Post(i + 1, 1, f"#t{i}", 1.0)).encode())  # type: ignore[misc]
        await asyncio.Event().wait()

    batches = pipeline.batches(trickle(), 100, 0.05)
    async with asyncio.timeout(2):
        batch = await anext(batches)
    assert len(batch) == 2
    await batches.aclose()


async def test_batches_keep_the_order_of_the_messages() -> None:
    """Messages trickling in while batches time out and are slow to be handled: every
    message comes out once, in order. (A get left pending by a timed-out batch once lost
    its message's place, and the store skipped it as below the next batch's offsets.)"""

    class Fake:
        def __init__(self, n: int) -> None:
            self.n = n

    async def trickle() -> AsyncIterator[brokers.Message]:
        for n in range(400):
            yield Fake(n)  # type: ignore[misc]
            if n % 7 == 0:
                await asyncio.sleep(0.004)  # longer than max_wait: batches time out
        await asyncio.Event().wait()  # a consumer never ends: it waits for more

    seen: list[int] = []
    batches = pipeline.batches(trickle(), 10, 0.002)
    async with asyncio.timeout(30):
        while len(seen) < 400:
            batch = await anext(batches)
            seen += [m.n for m in batch]  # type: ignore[attr-defined]
            await asyncio.sleep(0.003)  # the store's transaction: the reader runs on
    await batches.aclose()
    assert seen == list(range(400))
