"""The round-trip experiment: what the smallest request to each backing service costs.

Every later number in sdlab sits on top of these: a pool saves connection set-up but
not this round trip, a lock costs at least one, a broker hop at least two. Requests
go one at a time on one warmed-up connection, so the table is latency, not throughput.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Self

import aio_pika
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from sdlab.bench import Bench, Chart, Experiment, Latency, Outcome, register
from sdlab.infra.services import kafka, mariadb, postgres, redis, service

Request = Callable[[], Awaitable[object]]


@asynccontextmanager
async def mariadb_select_1(url: str) -> AsyncIterator[Request]:
    conn = await mariadb.connect(url, autocommit=True)
    try:
        async with conn.cursor() as cur:

            async def once() -> object:
                await cur.execute("SELECT 1")
                return await cur.fetchone()

            yield once
    finally:
        await conn.ensure_closed()


@asynccontextmanager
async def postgres_select_1(url: str) -> AsyncIterator[Request]:
    async with await postgres.connect(url, autocommit=True) as conn, conn.cursor() as cur:

        async def once() -> object:
            await cur.execute("SELECT 1")
            return await cur.fetchone()

        yield once


@asynccontextmanager
async def redis_ping(url: str) -> AsyncIterator[Request]:
    client = redis.connect(url)
    try:
        yield client.ping
    finally:
        await client.aclose()


@asynccontextmanager
async def rabbitmq_publish_get(url: str) -> AsyncIterator[Request]:
    """Publish with a confirm to an exclusive queue, then basic.get it back."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(exclusive=True)
        body = aio_pika.Message(b"ping")

        async def once() -> object:
            await channel.default_exchange.publish(body, routing_key=queue.name)
            return await queue.get(no_ack=True, fail=True)

        yield once
    finally:
        await connection.close()


@asynccontextmanager
async def kafka_produce_consume(url: str) -> AsyncIterator[Request]:
    """Produce (acks=1) to a fresh one-partition topic, then consume that record."""
    servers, topic = kafka.bootstrap_servers(url), f"sdlab-roundtrip-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks=1, linger_ms=0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers, enable_auto_commit=False, fetch_max_wait_ms=500
    )
    await producer.start()
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_end(partition)

        async def once() -> object:
            await producer.send_and_wait(topic, b"ping", partition=0)
            return await consumer.getone(partition)

        yield once
    finally:
        await consumer.stop()
        await producer.stop()
        await admin.delete_topics([topic])
        await admin.close()


CASES = [
    ("mysql", "SELECT 1", mariadb_select_1),
    ("postgres", "SELECT 1", postgres_select_1),
    ("redis", "PING", redis_ping),
    ("rabbitmq", "publish (confirmed) + basic.get", rabbitmq_publish_get),
    ("kafka", "produce (acks=1) + fetch", kafka_produce_consume),
]


@register
@dataclass
class RoundTrip(Experiment):
    """Latency of the smallest request each backing service answers, sent one at a time
    over one warmed-up connection from an asyncio client on the same machine."""

    name = "roundtrip"
    system = "infra"
    title = "Round trip to each backing service"
    services = tuple(name for name, _, _ in CASES)

    requests: int = 5_000
    warmup: int = 200

    @classmethod
    def quick(cls) -> Self:
        return cls(requests=500, warmup=50)

    async def run(self, bench: Bench) -> Outcome:
        rows = []
        for name, request, client in CASES:
            endpoint, latency = bench.endpoint(name), Latency()
            async with client(endpoint.url) as once:
                for _ in range(self.warmup):
                    await once()
                title = service(name).title
                with bench.progress(f"{title}: {request}", total=self.requests) as advance:
                    for _ in range(self.requests):
                        start = perf_counter_ns()
                        await once()
                        latency.record(perf_counter_ns() - start)
                        advance()
            summary = latency.summary(percentiles=(50, 90, 99))
            del summary["count"]  # it is the `requests` parameter
            rows.append(
                {
                    "service": title,
                    "request": request,
                    **summary,
                    "requests/s": 1000 / summary["mean (ms)"],
                }
            )
        return Outcome(
            rows,
            chart=Chart(
                x="service", y=["p50 (ms)", "p99 (ms)"], ylabel="ms (log scale)", logy=True
            ),
            notes=[
                "One request in flight at a time: requests/s is 1 / mean latency, the "
                "ceiling for a single connection, not the server's throughput.",
                f"Kafka: the topic holds {self.warmup + self.requests:,} records by the end. "
                "tansu's in-memory engine scans a partition on every fetch, so its fetch "
                "latency grows with the partition (about 0.35 ms per 1,000 records here); "
                "Apache Kafka finds an offset through an index.",
            ],
        )
