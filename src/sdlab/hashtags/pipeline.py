"""The pipeline's stages, each an async function that runs until cancelled:

    generate   Posts -> topic `posts`            keyed by post id
    extract    `posts` -> topic `tagged`         one message per post with tags, keyed by post id
    count      `tagged` -> PostgreSQL            one transaction per batch, exactly once

Each stage runs on any `sdlab.brokers.Broker` (Kafka by default, RabbitMQ by its URL);
several of one stage share its work as one consumer group. Delivery between stages is at
least once: a stage acks a message only after its output is safe (the next topic has it,
or the store committed it), and the store recognises what it has counted already, so the
counts are exact however the stages are killed and restarted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

from sdlab import brokers
from sdlab.brokers import Broker, Message
from sdlab.hashtags.extract import hashtags
from sdlab.hashtags.posts import Post, Tagged
from sdlab.hashtags.store import Added, Delivered, Store

logger = logging.getLogger(__name__)

FETCH_WAIT = 0.05
"""Seconds a Kafka fetch may wait for records (`brokers.connect(fetch_max_wait=...)`):
tansu holds a fetch that long even when records arrive meanwhile, so each hop of the
pipeline adds up to this much delay; the brokers' default, 0.5 s, would add a second."""


async def connect(url: str, *, session_timeout: float = 10.0) -> Broker:
    """The broker at `url`, set for a pipeline stage (`FETCH_WAIT`)."""
    return await brokers.connect(url, session_timeout=session_timeout, fetch_max_wait=FETCH_WAIT)


@dataclass(frozen=True)
class Topics:
    """The topics and groups of one pipeline; `prefix` keeps several apart."""

    prefix: str = "hashtags"
    counter_group: str | None = None
    """The counters' consumer group (None: PREFIX.counter); counters in another group
    count the same posts again, into a store of their own."""

    @property
    def posts(self) -> str:
        return f"{self.prefix}.posts"

    @property
    def tagged(self) -> str:
        return f"{self.prefix}.tagged"

    @property
    def extractor(self) -> str:
        return f"{self.prefix}.extractor"

    @property
    def counter(self) -> str:
        return self.counter_group or f"{self.prefix}.counter"

    async def declare(self, broker: Broker, *, partitions: int | None = None) -> None:
        """Make both topics and their groups exist, so nothing published is lost."""
        await broker.declare(self.posts, groups=[self.extractor], partitions=partitions)
        await broker.declare(self.tagged, groups=[self.counter], partitions=partitions)


@dataclass
class Progress:
    """What a stage has done, for a progress line; shared with whoever displays it."""

    sent: int = 0
    acked: int = 0
    batches: int = 0
    counted: int = 0
    """Posts the store counted (not skipped as counted before)."""
    skipped: int = 0
    """Deliveries recognised as counted before: redeliveries after a crash."""
    refused: int = 0
    """Messages that were not posts (not JSON, fields missing): logged and acked."""
    duplicates: int = 0
    """Posts delivered again at new offsets (their extractor sent them twice)."""
    delays: list[float] | None = None
    """If a list: seconds from each post's creation to its count's commit."""


async def generate(
    broker: Broker,
    topics: Topics,
    posts: Iterable[Post],
    *,
    rate: float | None = None,
    in_flight: int = 256,
    progress: Progress | None = None,
) -> int:
    """Publish `posts` (an iterable that ends, or islice it), keyed by post id: `rate`
    posts per second, or as fast as the broker takes them (None), with at most
    `in_flight` waiting for the broker's confirmation. Returns how many were sent. A
    send that fails stops the rest and raises (in an ExceptionGroup's place, its error)."""
    progress = progress or Progress()
    slots = asyncio.Semaphore(in_flight)
    start = time.perf_counter()

    async def send(post: Post) -> None:
        try:
            await broker.publish(topics.posts, post.encode(), key=str(post.id))
            progress.sent += 1
        finally:
            slots.release()

    async with _first_error(), asyncio.TaskGroup() as sends:
        for i, post in enumerate(posts):
            if rate:
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            await slots.acquire()
            sends.create_task(send(post))
    return progress.sent


async def extract(
    broker: Broker,
    topics: Topics,
    *,
    prefetch: int = 1000,
    max_wait: float = 0.005,
    progress: Progress | None = None,
) -> None:
    """Read posts, send each one with tags on to `tagged` (keyed by its id), then ack
    it; a post with no tag is acked at once. Runs until cancelled. Posts are handled
    in batches of half `prefetch` (or what came within `max_wait` seconds): one send
    of the batch's tagged posts, then its acks, while the next batch is read."""
    progress = progress or Progress()
    async with broker.consume(topics.posts, topics.extractor, prefetch=prefetch) as messages:
        async for batch in batches(messages, max(1, prefetch // 2), max_wait):
            out = []
            for message in batch:
                try:
                    post = Post.decode(message.body)
                except (ValueError, KeyError, TypeError) as exc:
                    _refuse(message, exc, progress)
                    continue
                tags = hashtags(post.text)
                if tags:
                    out.append((Tagged.wrap(message.body, tags), str(post.id)))
            if out:
                await broker.publish_many(topics.tagged, out)
            progress.sent += len(out)
            for message in batch:
                await message.ack()
            progress.acked += len(batch)


def _refuse(message: Message, exc: Exception, progress: Progress) -> None:
    """A message that is not what the stage reads: logged, and acked with its batch
    (read again, it would stop the stage again, for ever)."""
    progress.refused += 1
    logger.warning("a message that is not a post was skipped (%s): %.80r", exc, message.body)


@asynccontextmanager
async def _first_error() -> AsyncIterator[None]:
    """A task group's failure as its first error, as a caller of one call expects."""
    try:
        yield
    except ExceptionGroup as group:
        raise group.exceptions[0] from group


async def count(
    broker: Broker,
    store: Store,
    topics: Topics,
    *,
    batch_size: int = 500,
    max_wait: float = 0.05,
    progress: Progress | None = None,
    on_batch: Callable[[Added], None] | None = None,
) -> None:
    """Count tagged posts into `store`: a batch is `batch_size` messages, or fewer once
    the first of them has waited `max_wait` seconds; one transaction per batch, then
    the batch's acks. While a batch is written, the next one is read. Runs until
    cancelled."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    progress = progress or Progress()
    prefetch = 2 * batch_size
    async with broker.consume(topics.tagged, topics.counter, prefetch=prefetch) as messages:
        async for batch in batches(messages, batch_size, max_wait):
            delivered = []
            for m in batch:
                try:
                    delivered.append(Delivered(Tagged.decode(m.body), m.partition, m.offset))
                except (ValueError, KeyError, TypeError) as exc:
                    _refuse(m, exc, progress)
            added = await store.add(delivered, topic=topics.tagged, group=topics.counter)
            if progress.delays is not None:
                committed = time.time()
                progress.delays.extend(committed - d.tagged.post.created for d in delivered)
            for message in batch:
                await message.ack()
            progress.batches += 1
            progress.acked += len(batch)
            progress.counted += added.posts
            progress.skipped += added.skipped
            progress.duplicates += len(delivered) - added.skipped - added.posts
            if on_batch is not None:
                on_batch(added)


async def batches(
    messages: AsyncIterator[Message], size: int, max_wait: float
) -> AsyncIterator[list[Message]]:
    """Group `messages` into lists of `size`, or fewer once the first has waited
    `max_wait` seconds. A reader task keeps reading while a batch is handled (a
    consumer's iterator yields nothing while the topic is idle, so it cannot time a
    batch by itself). A get that timed out stays pending for the next batch (cancelling
    it could drop the message it was just given), and goes first: messages come out in
    the order they came in."""
    queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=size)

    async def read() -> None:
        async for message in messages:
            await queue.put(message)

    reader = asyncio.create_task(read())
    getter: asyncio.Future[Message] | None = None
    try:
        while True:
            batch: list[Message] = []
            deadline: float | None = None
            while len(batch) < size:
                # A get left pending by the last batch has the oldest message, or will
                # have: taking newer ones from the queue first would reorder the topic
                # (and the store skips what is below a batch's offsets as counted).
                if getter is None and not queue.empty():
                    batch.append(queue.get_nowait())
                else:
                    timeout = None if deadline is None else deadline - time.monotonic()
                    if timeout is not None and timeout <= 0:
                        break
                    getter = getter or asyncio.ensure_future(queue.get())
                    waiting: set[asyncio.Future[Any]] = {getter, reader}
                    done, _ = await asyncio.wait(
                        waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                    )
                    if getter in done:
                        batch.append(getter.result())
                        getter = None
                    elif reader in done:
                        reader.result()  # raises the consumer's error
                        raise RuntimeError("the consumer ended")
                    else:
                        break  # the first has waited long enough
                if deadline is None:
                    deadline = time.monotonic() + max_wait
            yield batch
    finally:
        for task in (getter, reader):
            if task is not None:
                task.cancel()
        with suppress(asyncio.CancelledError):
            await reader


async def tidy(store: Store, *, every: float = 60.0, keep_minutes: int | None = None) -> None:
    """Fold old minutes into hours every `every` seconds, until cancelled (a counter
    runs it beside `count`)."""
    while True:
        await asyncio.sleep(every)
        if keep_minutes is None:
            await store.roll_up()
        else:
            await store.roll_up(keep_minutes=keep_minutes)
