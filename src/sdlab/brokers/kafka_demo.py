"""Kafka's demo programs, as async functions in the tutorials' manner (see tutorials.py):
keyed production, a consumer group member that commits after each record, and replay.

    await kafka_demo.produce(bootstrap, "orders", ["paid", "shipped"], key="alice")

Each takes the brokers' bootstrap address (host:port) and says each line through `say`.
"""

from __future__ import annotations

from sdlab.brokers import kafka
from sdlab.brokers.tutorials import Say, print_line, shown, take

DEFAULT_MAX_REQUEST = 1_048_576


async def produce(
    bootstrap: str,
    topic: str,
    values: list[str],
    *,
    key: str | None = None,
    partitions: int | None = None,
    say: Say = print_line,
) -> None:
    """Send records, each acknowledged; say where each went. The topic is created with
    `partitions` (default 1) if it is new; TopologyMismatch if it has another count.
    The producer's `max_request_size` is made to fit the largest record (at least the
    usual 1 MiB): what is too large is for the broker to say."""
    await kafka.create_topic(bootstrap, topic, partitions=partitions)
    largest = max((len(value.encode()) for value in values), default=0)
    room = largest + len((key or "").encode()) + 1024  # the batch's and record's headers
    async with kafka.Producer(
        bootstrap, max_request_size=max(DEFAULT_MAX_REQUEST, room)
    ) as producer:
        for value in values:
            partition, offset = await producer.send(topic, value, key=key)
            say(f" [x] Sent {shown(value)} -> partition {partition}, offset {offset}")


async def consume(
    bootstrap: str,
    topic: str,
    group: str,
    *,
    session_timeout: float = 10.0,
    count: int | None = None,
    say: Say = print_line,
) -> None:
    """Read as a member of `group`, saying each record, then acking it (committed before
    the next fetch). The topic is created, with one partition, if it is new."""
    await kafka.create_topic(bootstrap, topic)
    consumer = kafka.GroupConsumer(bootstrap, topic, group, session_timeout=session_timeout)
    async with consumer:
        async for record in take(aiter(consumer), count, say):
            key = "" if record.key is None else f", key {record.key.decode()}"
            say(f" [x] {record.text} (partition {record.partition}, offset {record.offset}{key})")
            consumer.ack(record)


async def replay(
    bootstrap: str,
    topic: str,
    *,
    offset: int = 0,
    partitions: list[int] | None = None,
    say: Say = print_line,
) -> None:
    """Say the records from `offset` to the end as it is now (of every partition, or of
    those given), outside any group."""
    async for record in kafka.replay(bootstrap, topic, offset=offset, partitions=partitions):
        say(f" [x] {record.text} (partition {record.partition}, offset {record.offset})")
