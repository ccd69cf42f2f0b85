"""What our layer costs: messages per second through each broker, ours beside the bare
client doing the same work.

The same work for everyone: one producer publishes N persistent messages with at most
`window` unconfirmed at a time (RabbitMQ: mandatory, with publisher confirms; Kafka:
acks=all); one consumer takes them with `prefetch` unacked at most and acks each one
(RabbitMQ: basic.ack; Kafka: offsets committed after processing, before each fetch). The
clock runs from the first publish to the last ack, with the consumer already subscribed
(a warm-up message went through first). Contenders take turns, round after round, on
fresh queues and topics; each row is its best round.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Self

import aio_pika
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from sdlab.bench import Bench, Chart, Experiment, Headline, Outcome, Row, register
from sdlab.brokers.broker import connect
from sdlab.brokers.kafka import GroupConsumer, Producer, create_topic, delete_topic
from sdlab.brokers.rabbit import QUORUM, Queue, Rabbit
from sdlab.infra.services.kafka import bootstrap_servers

BODY = b"x" * 100
FETCH_MAX_WAIT_MS = 20
"""tansu holds a parked fetch until its wait runs out even when records arrive meanwhile
(Apache Kafka answers as soon as there is data): a short wait keeps the Kafka contenders
from measuring that wait rather than their work."""

Publish = Callable[[bytes], Awaitable[object]]
Consume = Callable[[Callable[[], bool]], Awaitable[None]]
"""Consumes, calling `seen()` after acking each message, until it returns True."""


@dataclass(frozen=True)
class Pipe:
    publish: Publish
    consume: Consume


Contender = Callable[[str, str, int], AbstractAsyncContextManager[Pipe]]
"""(broker URL, fresh queue/topic name, prefetch) -> a publisher and a consumer."""


@asynccontextmanager
async def raw_aio_pika(url: str, name: str, prefetch: int) -> AsyncIterator[Pipe]:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(name, durable=True, arguments=dict(QUORUM))
        consuming = await connection.channel()
        await consuming.set_qos(prefetch_count=prefetch)
        queue = await consuming.get_queue(name, ensure=False)

        async def publish(body: bytes) -> object:
            message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            # Mandatory as every sdlab publish, the same work: aio-pika's default, spelled out.
            return await channel.default_exchange.publish(message, name, mandatory=True)

        async def consume(seen: Callable[[], bool]) -> None:
            async with queue.iterator() as messages:
                async for message in messages:
                    await message.ack()
                    if seen():
                        return

        yield Pipe(publish, consume)
    finally:
        channel = await connection.channel()
        await channel.queue_delete(name)
        await connection.close()


@asynccontextmanager
async def sdlab_queue(url: str, name: str, prefetch: int) -> AsyncIterator[Pipe]:
    async with await Rabbit.connect(url) as rabbit:
        queue = Queue(rabbit, name, persistent=True)
        await queue.declare()

        async def consume(seen: Callable[[], bool]) -> None:
            async with queue.consume(prefetch=prefetch) as messages:
                async for message in messages:
                    await message.ack()
                    if seen():
                        return

        try:
            yield Pipe(queue.send, consume)
        finally:
            await rabbit.delete_queue(name)


@asynccontextmanager
async def sdlab_broker(url: str, name: str, prefetch: int) -> AsyncIterator[Pipe]:
    """The common interface (what a service such as the planned hashtag pipeline would
    use), on either broker: the one `url` names. A group of its own each round, as the
    other contenders have: on tansu one group shared by every round (and every run on
    the broker) waited for the member of the round before to time out, and one left by
    a killed run kept it rejoining for ever (see docs/brokers.md)."""
    broker = await connect(url, session_timeout=6, fetch_max_wait=FETCH_MAX_WAIT_MS / 1000)
    group = f"{name}-bench"
    try:
        await broker.declare(name, groups=[group], partitions=1)

        async def publish(body: bytes) -> None:
            await broker.publish(name, body)

        async def consume(seen: Callable[[], bool]) -> None:
            async with broker.consume(name, group, prefetch=prefetch) as messages:
                async for message in messages:
                    await message.ack()
                    if seen():
                        return

        yield Pipe(publish, consume)
    finally:
        await broker.delete(name, groups=[group])
        await broker.close()


@asynccontextmanager
async def raw_aiokafka(url: str, name: str, prefetch: int) -> AsyncIterator[Pipe]:
    bootstrap = bootstrap_servers(url)
    await create_topic(bootstrap, name)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    consumer = AIOKafkaConsumer(
        name,
        bootstrap_servers=bootstrap,
        group_id=f"{name}-bench",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    await producer.start()
    await consumer.start()

    async def publish(body: bytes) -> object:
        return await producer.send_and_wait(name, body)

    async def consume(seen: Callable[[], bool]) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=1000, max_records=prefetch)
            done = False
            for records in batches.values():
                for _ in records:
                    done = seen()  # processed: nothing to do per message
            if batches:
                await consumer.commit()
            if done:
                return

    try:
        yield Pipe(publish, consume)
    finally:
        await consumer.stop()
        await producer.stop()
        await delete_topic(bootstrap, name)


@asynccontextmanager
async def sdlab_kafka(url: str, name: str, prefetch: int) -> AsyncIterator[Pipe]:
    bootstrap = bootstrap_servers(url)
    await create_topic(bootstrap, name)
    producer = Producer(bootstrap)
    consumer = GroupConsumer(
        bootstrap,
        name,
        f"{name}-bench",
        session_timeout=6,
        max_records=prefetch,
        fetch_max_wait=FETCH_MAX_WAIT_MS / 1000,
    )
    await producer.start()
    await consumer.start()

    async def publish(body: bytes) -> object:
        return await producer.send(name, body)

    async def consume(seen: Callable[[], bool]) -> None:
        async for record in consumer:
            consumer.ack(record)
            if seen():
                await consumer.commit()  # as the bare loop does after its last batch
                return

    try:
        yield Pipe(publish, consume)
    finally:
        await consumer.stop()
        await producer.stop()
        await delete_topic(bootstrap, name)


CONTENDERS: list[tuple[str, str, str, Contender]] = [
    # (broker service, layer, its peer, how)
    ("rabbitmq", "aio-pika, bare loop", "", raw_aio_pika),
    ("rabbitmq", "sdlab Queue", "aio-pika, bare loop", sdlab_queue),
    ("rabbitmq", "sdlab Broker on RabbitMQ", "aio-pika, bare loop", sdlab_broker),
    ("kafka", "aiokafka, bare loop", "", raw_aiokafka),
    ("kafka", "sdlab Producer + GroupConsumer", "aiokafka, bare loop", sdlab_kafka),
    ("kafka", "sdlab Broker on Kafka", "aiokafka, bare loop", sdlab_broker),
]


@register
@dataclass
class BrokerThroughput(Experiment):
    """Messages per second, publish -> consume, with confirms and manual acks, through
    sdlab.brokers and through the bare client loop it is built on, in the same run."""

    name = "brokers"
    system = "brokers"
    title = "Broker throughput: sdlab.brokers beside bare aio-pika and aiokafka"
    services = ("rabbitmq", "kafka")

    rabbit_messages: int = 20_000
    kafka_messages: int = 5_000
    window: int = 100
    prefetch: int = 100
    rounds: int = 5

    @classmethod
    def quick(cls) -> Self:
        return cls(rabbit_messages=3_000, kafka_messages=1_000, rounds=3)

    async def run(self, bench: Bench) -> Outcome:
        results: dict[str, list[float]] = {f"{s}/{layer}": [] for s, layer, _, _ in CONTENDERS}
        total = self.rounds * sum(self._messages(s) for s, _, _, _ in CONTENDERS)
        with bench.progress("publish -> consume, in turns", total=total) as advance:
            for _ in range(self.rounds):
                for service, layer, _, how in CONTENDERS:
                    url = bench.endpoint(service).url
                    rate = await self._measure(how, url, self._messages(service), advance)
                    results[f"{service}/{layer}"].append(rate)
        rows = []
        for service, layer, peer, _ in CONTENDERS:
            rates = results[f"{service}/{layer}"]
            best = max(rates)
            row = {
                "broker": "RabbitMQ" if service == "rabbitmq" else "Kafka (tansu)",
                "layer": layer,
                "messages": self._messages(service),
                "best msgs/s": best,
                "median msgs/s": statistics.median(rates),
            }
            bare = results[f"{service}/{peer or layer}"]
            row["best / bare"] = best / max(bare)
            row["median / bare"] = statistics.median(rates) / statistics.median(bare)
            rows.append(row)
        return Outcome(
            rows,
            chart=Chart(
                x="layer",
                y=["best / bare", "median / bare"],
                ylabel="throughput / the bare client loop's (bars from 1.0)",
                baseline=1.0,
            ),
            notes=[
                f"One producer with at most {self.window} unconfirmed publishes, one "
                f"consumer with prefetch {self.prefetch} acking every message; persistent "
                "messages on a durable quorum queue, every publish mandatory, the bare "
                "loop's too (RabbitMQ), acks=all and commits after processing (Kafka). "
                "Best of "
                f"{self.rounds} interleaved rounds; `best / bare` is a layer's best over "
                "the bare loop's best on the same broker, `median / bare` the same for "
                "medians (target: 0.8 or more).",
                "Kafka: a fresh one-partition topic per round, kept short because tansu's "
                "fetch cost grows with the partition's length (see docs/infra.md).",
            ],
        )

    def headline(self, rows: list[Row]) -> Headline | None:
        layered = [row for row, c in zip(rows, CONTENDERS, strict=True) if c[2]]
        worst = min(layered, key=lambda r: r["median / bare"])
        return Headline(
            f"worst layer's median / bare ({worst['broker']}, {worst['layer']})",
            worst["median / bare"],
            unit="x",
            target=0.8,
            better="higher",
        )

    def _messages(self, service: str) -> int:
        return self.rabbit_messages if service == "rabbitmq" else self.kafka_messages

    async def _measure(
        self, how: Contender, url: str, messages: int, advance: Callable[..., None]
    ) -> float:
        name = f"sdlab-bench-{uuid.uuid4().hex[:8]}"
        seen, goal, timed = 0, 1, False
        arrived = asyncio.Event()

        def one() -> bool:
            nonlocal seen
            seen += 1
            if seen < goal:
                return False
            arrived.set()
            return timed  # the consumer returns at the end of the timed phase only

        async with how(url, name, self.prefetch) as pipe:
            consumer: asyncio.Future[None] = asyncio.ensure_future(pipe.consume(one))
            try:
                # Warm-up: one message through, so the consumer is subscribed and its
                # group has settled before the clock starts.
                await pipe.publish(BODY)
                await asyncio.wait_for(arrived.wait(), 120)
                seen, goal, timed = 0, messages, True
                window = asyncio.Semaphore(self.window)

                async def publish() -> None:
                    async with window:
                        await pipe.publish(BODY)

                began = time.perf_counter()
                await asyncio.gather(*(publish() for _ in range(messages)))
                await asyncio.wait_for(asyncio.shield(consumer), 300)
                took = time.perf_counter() - began
                advance(messages)
            finally:
                consumer.cancel()
                await asyncio.gather(consumer, return_exceptions=True)
        return messages / took
