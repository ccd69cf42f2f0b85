"""Stages killed with SIGKILL mid-stream, several times, and started again: the final
counts equal a direct count of the generated posts, exactly. The killed stage is a real
`sdlab hashtags` process; the others run in the test's process."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from collections.abc import Coroutine
from typing import Any

from sdlab.brokers import Broker
from sdlab.hashtags import pipeline
from sdlab.hashtags.pipeline import Topics
from sdlab.hashtags.posts import Post, Posts, Tagged
from sdlab.hashtags.store import Store
from tests.brokers.programs import Program
from tests.helpers import eventually

POSTS = 3000
RATE = 600.0  # posts per second: the stream lasts 5 s, the kills land inside it
KILLS = 3


def direct_count(posts: list[Post]) -> dict[str, int]:
    return dict(Counter(tag.key for post in posts for tag in Tagged.of(post).tags))


async def _progressed(probe: Store, since: int) -> None:
    async def moved() -> bool:
        return (await probe.summary())["posts"] > since

    assert await eventually(moved, True, timeout=60), "the stage did not get going"


async def _kill_and_restart(stage: list[str], store: Store) -> Program:
    """Start `stage`, kill it once it has made progress, KILLS times; the last one runs."""
    for _ in range(KILLS):
        program = await Program.sdlab(*stage)
        await _progressed(store, (await store.summary())["posts"])
        await asyncio.sleep(random.uniform(0, 0.3))
        program.kill()
        await program.process.wait()
    return await Program.sdlab(*stage)


async def _killed_mid_stream(
    stage: list[str], other: Coroutine[Any, Any, None], broker: Broker, topics: Topics,
    store: Store, seed: int,
) -> None:  # fmt: skip
    """Posts generated at RATE while `stage` (a process) is killed and restarted and
    `other` (the other stage) runs here; then the counts against a direct count."""
    posts = list(itertools.islice(Posts(seed=seed), POSTS))
    here = asyncio.create_task(other)
    generator = asyncio.create_task(pipeline.generate(broker, topics, posts, rate=RATE))
    last = None
    try:
        last = await _kill_and_restart(stage, store)
        await generator
        expected = direct_count(posts)
        assert await eventually(store.totals, expected, timeout=90) == expected
    finally:
        here.cancel()
        generator.cancel()
        await asyncio.gather(here, generator, return_exceptions=True)
        if last is not None:
            await last.stop()


async def test_the_counter_killed_mid_stream_loses_and_doubles_nothing(
    broker: Broker, broker_url: str, topics: Topics, store: Store, postgres_db: str
) -> None:
    stage = [
        "hashtags", "counter", "--broker", broker_url, "--db", postgres_db,
        "--prefix", topics.prefix, "--batch-size", "50", "--session-timeout", "2",
    ]  # fmt: skip
    extractor = pipeline.extract(broker, topics)
    await _killed_mid_stream(stage, extractor, broker, topics, store, seed=21)


async def test_the_extractor_killed_mid_stream_loses_and_doubles_nothing(
    broker: Broker, broker_url: str, topics: Topics, store: Store
) -> None:
    """A killed extractor sends again the posts it had sent but not acked: the counter
    sees them twice, at two offsets, and counts them once."""
    stage = [
        "hashtags", "extractor", "--broker", broker_url, "--prefix", topics.prefix,
        "--session-timeout", "2",
    ]  # fmt: skip
    counter = pipeline.count(broker, store, topics)
    await _killed_mid_stream(stage, counter, broker, topics, store, seed=22)
