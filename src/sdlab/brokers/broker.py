"""One small interface over both brokers, so that a service runs on either by its URL.

    broker = await connect(url)            # amqp://... (RabbitMQ) or kafka://... (Kafka)
    await broker.declare("posts", groups=["extractor"])
    await broker.publish("posts", "a post with a #tag", key="user-7")
    async with broker.consume("posts", "extractor") as messages:
        async for message in messages:
            ...
            await message.ack()

A *topic* is a stream of messages; a *group* is the consumers that share its work:
every group gets every message, and within a group each message goes to one consumer.
Delivery is at least once: a message that was not acked when its consumer died is
delivered again.

    ------------  -----------------------------------  ---------------------------------
                  RabbitMQ                              Kafka
    topic         a durable topic exchange              a topic (its partitions)
    group         a durable quorum queue TOPIC.GROUP,   a consumer group
                  bound with `#`
    key           the routing key                       the partition key: per-key order
    ack           basic.ack                             an offset commit (see kafka.py)
    prefetch      basic.qos: unacked messages held      the same, counted here (a fetch
                                                        does not wait for acks)
    before any    the message has nowhere to go:        the topic keeps it; a new group
    group exists  publish raises Unroutable             reads from the beginning
    ------------  -----------------------------------  ---------------------------------
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

from aio_pika.abc import ExchangeType

from sdlab.brokers.errors import InvalidUrl, Unroutable
from sdlab.brokers.kafka import (
    GroupConsumer,
    Producer,
    Record,
    bootstrap_of,
    create_topic,
    delete_topic,
)
from sdlab.brokers.rabbit import QUORUM, Body, Rabbit


@dataclass(eq=False, slots=True)
class Message:
    """A message handed to a consumer: ack it once it is processed."""

    body: bytes
    key: str | None
    _ack: Callable[[], Awaitable[None] | None]
    partition: int | None = None
    offset: int | None = None
    """Where the message stands in its topic, on Kafka (None on RabbitMQ): what a
    consumer that stores its progress beside its results records (hashtags' counter)."""
    _acked: bool = field(default=False, init=False)

    @property
    def text(self) -> str:
        return self.body.decode()

    async def ack(self) -> None:
        """Tell the broker the message is processed. Idempotent on both brokers: an ack
        of an acked message does nothing (aio-pika would raise on RabbitMQ). An ack that
        fails (the connection dropped) leaves the message unacked, to be acked again."""
        if self._acked:
            return
        self._acked = True  # before the await: a second ack meanwhile is a repeat too
        try:
            done = self._ack()  # Kafka's is a plain call: the commit comes later
            if done is not None:
                await done
        except BaseException:
            self._acked = False
            raise


class Broker(Protocol):
    async def declare(
        self, topic: str, *, groups: Sequence[str] = (), partitions: int | None = None
    ) -> None:
        """Make `topic` and its `groups` exist, so that messages published from now on
        wait for them. On Kafka a new topic gets `partitions` (None: 1), and an existing
        one with another count than the one asked raises `TopologyMismatch`, as RabbitMQ
        does for a queue declared otherwise (RabbitMQ has no partitions: it ignores them)."""

    async def publish(self, topic: str, body: Body, *, key: str | None = None) -> None:
        """Send a message; returns once the broker has stored it."""

    async def publish_many(self, topic: str, messages: Sequence[tuple[Body, str | None]]) -> None:
        """Send (body, key) messages; returns once the broker has stored them all."""

    def consume(
        self, topic: str, group: str, *, prefetch: int = 100
    ) -> AbstractAsyncContextManager[AsyncIterator[Message]]:
        """Consume as a member of `group`, holding `prefetch` unacked messages at most."""

    async def delete(self, topic: str, *, groups: Sequence[str] = ()) -> None:
        """Delete `topic` with its messages, and its `groups`' queues on RabbitMQ (Kafka
        keeps a group's committed offsets: groups cannot be deleted on every broker)."""

    async def close(self) -> None: ...


async def connect(
    url: str, *, session_timeout: float = 10.0, fetch_max_wait: float = 0.5
) -> Broker:
    """The broker at `url`: `amqp://` or `amqps://` is RabbitMQ, `kafka://` a Kafka
    cluster. The Kafka consumers' settings (see `GroupConsumer`): `session_timeout`, how
    long a group waits for a silent member; `fetch_max_wait`, how long a fetch may wait."""
    scheme = urlsplit(url).scheme
    if scheme in ("amqp", "amqps"):
        return RabbitBroker(await Rabbit.connect(url))
    if scheme == "kafka":
        broker = KafkaBroker(
            bootstrap_of(url), session_timeout=session_timeout, fetch_max_wait=fetch_max_wait
        )
        try:
            await broker.start()
        except BaseException:
            with suppress(Exception):  # the producer's sockets, not left for the GC
                await broker.close()
            raise
        return broker
    raise InvalidUrl(
        f"no broker for scheme {scheme!r}: the URL should start with amqp:// or kafka://"
    )


class RabbitBroker:
    def __init__(self, rabbit: Rabbit) -> None:
        self.rabbit = rabbit
        self._topics: set[str] = set()
        self._groups: set[tuple[str, str]] = set()

    async def declare(
        self, topic: str, *, groups: Sequence[str] = (), partitions: int | None = None
    ) -> None:
        if topic not in self._topics:
            await self.rabbit.declare_exchange(topic, ExchangeType.TOPIC, durable=True)
            self._topics.add(topic)
        for group in groups:
            if (topic, group) not in self._groups:
                queue = f"{topic}.{group}"
                await self.rabbit.declare_queue(queue, arguments=QUORUM)
                await self.rabbit.bind(queue, topic, "#")
                self._groups.add((topic, group))

    async def publish(self, topic: str, body: Body, *, key: str | None = None) -> None:
        if topic not in self._topics:
            await self.declare(topic)
        if not await self.rabbit.publish(topic, key or "", body, persistent=True):
            raise Unroutable(
                f"topic {topic!r} has no group: nobody would get the message "
                "(declare the topic with its groups first)"
            )

    async def publish_many(self, topic: str, messages: Sequence[tuple[Body, str | None]]) -> None:
        # One channel confirms them all: their publishes overlap, their confirms too.
        await asyncio.gather(*(self.publish(topic, body, key=key) for body, key in messages))

    @asynccontextmanager
    async def consume(
        self, topic: str, group: str, *, prefetch: int = 100
    ) -> AsyncIterator[AsyncIterator[Message]]:
        await self.declare(topic, groups=[group])
        async with self.rabbit.consume(f"{topic}.{group}", prefetch=prefetch) as deliveries:

            async def messages() -> AsyncIterator[Message]:
                async for delivery in deliveries:
                    yield Message(delivery.body, delivery.routing_key or None, delivery.ack)

            yield messages()

    async def delete(self, topic: str, *, groups: Sequence[str] = ()) -> None:
        for group in groups:
            await self.rabbit.delete_queue(f"{topic}.{group}")
            self._groups.discard((topic, group))
        await self.rabbit.delete_exchange(topic)
        self._topics.discard(topic)

    async def close(self) -> None:
        await self.rabbit.close()


class KafkaBroker:
    def __init__(
        self, bootstrap: str, *, session_timeout: float = 10.0, fetch_max_wait: float = 0.5
    ) -> None:
        self.bootstrap = bootstrap
        self.session_timeout = session_timeout
        self.fetch_max_wait = fetch_max_wait
        self._producer = Producer(bootstrap)
        self._topics: dict[str, int] = {}  # their partition counts

    async def start(self) -> None:
        await self._producer.start()

    async def declare(
        self, topic: str, *, groups: Sequence[str] = (), partitions: int | None = None
    ) -> None:
        # Groups need nothing made: one with no commit yet reads from the beginning.
        known = self._topics.get(topic)
        if known is None or partitions not in (None, known):
            self._topics[topic] = await create_topic(self.bootstrap, topic, partitions=partitions)

    async def publish(self, topic: str, body: Body, *, key: str | None = None) -> None:
        if topic not in self._topics:
            await self.declare(topic)
        await self._producer.send(topic, body, key=key)

    async def publish_many(self, topic: str, messages: Sequence[tuple[Body, str | None]]) -> None:
        if topic not in self._topics:
            await self.declare(topic)
        await self._producer.send_many(topic, messages)

    @asynccontextmanager
    async def consume(
        self, topic: str, group: str, *, prefetch: int = 100
    ) -> AsyncIterator[AsyncIterator[Message]]:
        await self.declare(topic)
        consumer = GroupConsumer(
            self.bootstrap,
            topic,
            group,
            max_records=prefetch,
            session_timeout=self.session_timeout,
            fetch_max_wait=self.fetch_max_wait,
        )
        # Kafka has no prefetch of its own (a fetch does not wait for acks): the slots
        # make `prefetch` mean what it means on RabbitMQ, unacked messages held at most.
        slots = asyncio.Semaphore(prefetch)

        def acker(record: Record) -> Callable[[], None]:
            def ack() -> None:  # once per message: Message.ack() sees to it
                consumer.ack(record)
                slots.release()

            return ack

        async with consumer:

            async def messages() -> AsyncIterator[Message]:
                records = aiter(consumer)
                while True:
                    await slots.acquire()
                    record = await anext(records)
                    key = None if record.key is None else record.key.decode()
                    yield Message(record.value, key, acker(record), record.partition, record.offset)

            yield messages()

    async def delete(self, topic: str, *, groups: Sequence[str] = ()) -> None:
        await delete_topic(self.bootstrap, topic)
        self._topics.pop(topic, None)

    async def close(self) -> None:
        await self._producer.stop()
