"""Kafka on the Kafka-protocol broker sdlab runs: keyed partitions, order per key,
commits after processing, replay and lag. Each test has fresh topics (tansu's fetch cost
grows with a partition's length)."""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import Iterable

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    InvalidPartitionsError,
    InvalidTopicError,
    MessageSizeTooLargeError,
    UnknownTopicOrPartitionError,
)

from sdlab.brokers import (
    GroupConsumer,
    Producer,
    TopologyMismatch,
    create_topic,
    delete_topic,
    group_lag,
    replay,
)
from tests.brokers.conftest import Made


async def test_creating_a_topic_again_keeps_it_and_another_count_is_an_error(
    kafka_bootstrap: str, namespace: str, made: Made
):
    """The admin client does not raise what the broker refuses: it returns error codes,
    which `create_topic` reads. An existing topic is fine as it is, unless it was asked
    with another partition count."""
    topic = made.topic(f"{namespace}-declared")
    assert await create_topic(kafka_bootstrap, topic, partitions=2) == 2
    assert await create_topic(kafka_bootstrap, topic, partitions=2) == 2
    assert await create_topic(kafka_bootstrap, topic) == 2  # no count asked: as it is
    with pytest.raises(TopologyMismatch, match="exists with 2 partitions, not 3"):
        await create_topic(kafka_bootstrap, topic, partitions=3)
    assert await create_topic(kafka_bootstrap, topic) == 2  # unchanged
    await delete_topic(kafka_bootstrap, topic)
    await delete_topic(kafka_bootstrap, topic)  # gone already: nothing happens
    assert await create_topic(kafka_bootstrap, topic, partitions=3) == 3  # a new one


async def test_a_topic_without_partitions_is_refused(
    kafka_bootstrap: str, namespace: str, made: Made
):
    topic = made.topic(f"{namespace}-empty")
    with pytest.raises(InvalidPartitionsError, match="0 partitions"):
        await create_topic(kafka_bootstrap, topic, partitions=0)
    assert await create_topic(kafka_bootstrap, topic, partitions=1) == 1  # none was made


async def test_same_key_same_partition_and_order_kept_per_key(
    kafka_bootstrap: str, namespace: str, made: Made
):
    topic = made.topic(f"{namespace}-keyed")
    await create_topic(kafka_bootstrap, topic, partitions=3)
    partition_of: dict[str, set[int]] = defaultdict(set)
    async with Producer(kafka_bootstrap) as producer:
        sends = [
            producer.send(topic, f"{key}:{n}", key=key)
            for n in range(30)
            for key in ["alice", "bob", "carol", "dave", "erin"]
        ]
        # All at once: order per key must hold even with many sends in flight.
        placed = await asyncio.gather(*sends)
    for (partition, _), n in zip(placed, range(150), strict=True):
        partition_of[["alice", "bob", "carol", "dave", "erin"][n % 5]].add(partition)
    assert all(len(partitions) == 1 for partitions in partition_of.values())
    assert len({p for ps in partition_of.values() for p in ps}) > 1  # keys spread out

    seen: dict[str, list[int]] = defaultdict(list)
    async for record in replay(kafka_bootstrap, topic):
        key, n = record.text.split(":")
        assert record.key == key.encode()
        seen[key].append(int(n))
    assert seen == {key: list(range(30)) for key in ["alice", "bob", "carol", "dave", "erin"]}


async def test_send_many_puts_records_where_send_would_with_their_offsets(
    kafka_bootstrap: str, namespace: str, made: Made
):
    topic = made.topic(f"{namespace}-many")
    await create_topic(kafka_bootstrap, topic, partitions=3)
    keys = ["alice", "bob", "carol", "dave", "erin"]
    records = [(f"{key}:{n}", key) for n in range(40) for key in keys]
    async with Producer(kafka_bootstrap) as producer:
        placed = await producer.send_many(topic, records)
        alone = {key: (await producer.send(topic, f"{key}:alone", key=key))[0] for key in keys}
    assert {key: p for (p, _), (_, key) in zip(placed, records, strict=True)} == alone
    found = {
        (record.partition, record.offset): record.text
        async for record in replay(kafka_bootstrap, topic)
    }
    assert [found[where] for where in placed] == [value for value, _ in records]


@pytest.mark.slow
async def test_a_group_resumes_after_the_last_acked_record(
    kafka_bootstrap: str, namespace: str, made: Made
):
    """Offsets are committed only up to the first unacked record: a member that acked
    0, 1, 2 and 4 but not 3 leaves the group to resume at 3 (4 is read again)."""
    topic, group = made.topic(f"{namespace}-work"), f"{namespace}-g"
    await create_topic(kafka_bootstrap, topic)
    async with Producer(kafka_bootstrap) as producer:
        for i in range(8):
            await producer.send(topic, f"r{i}")
    async with GroupConsumer(kafka_bootstrap, topic, group, session_timeout=2) as first:
        async with asyncio.timeout(30):
            async for record in first:
                if record.offset != 3:
                    first.ack(record)
                if record.offset == 5:
                    break
    (lag,) = await group_lag(kafka_bootstrap, topic, group)
    assert (lag.committed, lag.end, lag.lag) == (3, 8, 5)
    async with GroupConsumer(kafka_bootstrap, topic, group, session_timeout=2) as second:
        again = []
        async with asyncio.timeout(30):
            async for record in second:
                again.append(record.offset)
                second.ack(record)
                if record.offset == 7:
                    break
    assert again == [3, 4, 5, 6, 7]
    (lag,) = await group_lag(kafka_bootstrap, topic, group)
    assert (lag.committed, lag.lag) == (8, 0)


async def test_replay_from_an_offset_and_a_partition(
    kafka_bootstrap: str, namespace: str, made: Made
):
    topic = made.topic(f"{namespace}-replay")
    await create_topic(kafka_bootstrap, topic, partitions=2)
    async with Producer(kafka_bootstrap) as producer:
        for i in range(10):
            await producer.send(topic, f"p0-{i}", partition=0)
            await producer.send(topic, f"p1-{i}", partition=1)
    everything = [r.text async for r in replay(kafka_bootstrap, topic)]
    assert sorted(everything) == sorted(
        [f"p0-{i}" for i in range(10)] + [f"p1-{i}" for i in range(10)]
    )
    tail = [
        (r.offset, r.text) async for r in replay(kafka_bootstrap, topic, offset=7, partitions=[1])
    ]
    assert tail == [(7, "p1-7"), (8, "p1-8"), (9, "p1-9")]
    assert [r async for r in replay(kafka_bootstrap, topic, offset=10)] == []


async def test_lag_per_partition(kafka_bootstrap: str, namespace: str, made: Made):
    topic, group = made.topic(f"{namespace}-lag"), f"{namespace}-g"
    await create_topic(kafka_bootstrap, topic, partitions=2)
    async with Producer(kafka_bootstrap) as producer:
        # Partition 0's records in one batch: tansu's ListOffsets says 1 for its end
        # after that (see kafka._ends); the lag must still count 6.
        await asyncio.gather(*(producer.send(topic, f"a{i}", partition=0) for i in range(6)))
        for i in range(4):
            await producer.send(topic, f"b{i}", partition=1)
    before = await group_lag(kafka_bootstrap, topic, group)
    assert [(x.partition, x.committed, x.end, x.lag) for x in before] == [
        (0, None, 6, 6),
        (1, None, 4, 4),
    ]
    async with GroupConsumer(kafka_bootstrap, topic, group, session_timeout=2) as consumer:
        handled = 0
        async with asyncio.timeout(30):
            async for record in consumer:
                if record.partition == 0 and record.offset < 2:
                    consumer.ack(record)
                handled += 1
                if handled == 10:
                    break
    after = await group_lag(kafka_bootstrap, topic, group)
    assert [(x.partition, x.committed, x.lag) for x in after] == [(0, 2, 4), (1, 0, 4)]


class Watched(GroupConsumer):
    """A member that tells when a rebalance takes its partitions back."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.revoked = asyncio.Event()

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await super().on_partitions_revoked(revoked)
        if revoked:
            self.revoked.set()


@pytest.mark.slow
async def test_what_was_fetched_before_a_rebalance_is_not_handed_out_after_it(
    kafka_bootstrap: str, namespace: str, made: Made
):
    """A member holds (has not acked) record 0 of both partitions, and has been handed
    the first record of its next fetch when a rebalance takes its partitions back. The
    rest of that fetch is stale: the partitions start over from their commits. Handed
    out anyway, a record of it acked let the next commit pass the held one (lost, had the
    member died then)."""
    topic, other = made.topic(f"{namespace}-held"), made.topic(f"{namespace}-other")
    group = f"{namespace}-g"
    await create_topic(kafka_bootstrap, topic, partitions=2)
    await create_topic(kafka_bootstrap, other)
    async with Producer(kafka_bootstrap) as producer:
        for partition in (0, 1):
            await producer.send(topic, f"p{partition} r0", partition=partition)
    member = Watched(kafka_bootstrap, topic, group, session_timeout=2, fetch_max_wait=1)
    async with member, asyncio.timeout(60):
        records = aiter(member)
        held = {(r.partition, r.offset) for r in [await anext(records), await anext(records)]}
        assert held == {(0, 0), (1, 0)}
        async with Producer(kafka_bootstrap, linger_ms=50) as producer:  # one fetch for both
            await asyncio.gather(*(producer.send(topic, f"p{p} r1", partition=p) for p in (0, 1)))
        member.ack(await anext(records))
        # A member joins the group for another topic: the rebalance gives this one both
        # partitions back.
        async with GroupConsumer(kafka_bootstrap, other, group, session_timeout=2):
            await member.revoked.wait()
            after = await anext(records)
            if (after.partition, after.offset) not in held:
                member.ack(after)
    lags = await group_lag(kafka_bootstrap, topic, group)
    assert [lag.committed for lag in lags] == [0, 0]  # nothing held was committed past
    assert (after.partition, after.offset) in held  # both partitions started over


@pytest.mark.slow
async def test_a_member_stalled_past_its_session_rejoins_and_reads_again(
    kafka_bootstrap: str, namespace: str, made: Made
):
    """A member whose process stalls (here its event loop is blocked) for longer than its
    session is dropped from the group, and another member takes its partitions. Awake,
    its commit of what it acked is refused (the group moved on): it must rejoin and go on
    rather than die, and read again what it acked without a commit."""
    topic, group = made.topic(f"{namespace}-stall"), f"{namespace}-g"
    await create_topic(kafka_bootstrap, topic, partitions=2)
    async with Producer(kafka_bootstrap) as producer:
        for i in range(4):
            await producer.send(topic, f"r{i}", partition=i % 2)
    taken_over, finished = threading.Event(), threading.Event()

    class Taker(GroupConsumer):
        async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
            if assigned:
                taken_over.set()

    async def other_member() -> None:  # in a thread of its own: the stall does not stop it
        async with Taker(kafka_bootstrap, topic, group, session_timeout=2):
            await asyncio.to_thread(finished.wait, 60)

    other = threading.Thread(target=asyncio.run, args=(other_member(),))
    async with GroupConsumer(kafka_bootstrap, topic, group, session_timeout=2) as member:
        records = aiter(member)
        try:
            async with asyncio.timeout(60):
                first = await anext(records)
                other.start()
                assert taken_over.wait(30)  # the stall: nothing runs here meanwhile
                member.ack(first)
                seen = [(first.partition, first.offset)]
                while len(seen) == len(set(seen)):
                    record = await anext(records)
                    member.ack(record)
                    seen.append((record.partition, record.offset))
        finally:
            finished.set()
            other.join()
    assert member.assignment() != set()  # a member again


@pytest.mark.parametrize(
    "topic", ["", "x" * 250, "bad topic!", ".", "..", "ünïcode"], ids=lambda t: repr(t[:12])
)
async def test_a_topic_name_kafka_would_refuse_is_refused_before_the_broker_sees_it(
    kafka_bootstrap: str, topic: str
):
    """tansu creates '' and 300 characters; Apache Kafka refuses them. Nothing is created."""
    with pytest.raises(InvalidTopicError, match="a name is 1 to 249 of"):
        await create_topic(kafka_bootstrap, topic)
    async with Producer(kafka_bootstrap) as producer:
        with pytest.raises(InvalidTopicError):
            await producer.send(topic, "x")
    with pytest.raises(InvalidTopicError):
        GroupConsumer(kafka_bootstrap, topic, "g")
    with pytest.raises(InvalidTopicError):
        [record async for record in replay(kafka_bootstrap, topic)]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        assert topic not in await admin.list_topics()
    finally:
        await admin.close()


async def test_the_longest_topic_name_kafka_takes_is_taken(
    kafka_bootstrap: str, namespace: str, made: Made
):
    topic = made.topic(f"{namespace}-".ljust(249, "x"))
    assert await create_topic(kafka_bootstrap, topic) == 1


async def test_replaying_a_partition_the_topic_lacks_raises_at_once(
    kafka_bootstrap: str, namespace: str, made: Made
):
    topic = made.topic(f"{namespace}-three")
    await create_topic(kafka_bootstrap, topic, partitions=3)
    async with asyncio.timeout(20):  # it waited for ever
        with pytest.raises(UnknownTopicOrPartitionError, match="no partition 3, 7"):
            [record async for record in replay(kafka_bootstrap, topic, partitions=[1, 3, 7])]


async def test_a_producer_sends_records_up_to_its_max_request_size(
    kafka_bootstrap: str, namespace: str, made: Made
):
    """Over 1 MiB needs a larger `max_request_size`; tansu took 50 MiB records too."""
    topic = made.topic(f"{namespace}-large")
    await create_topic(kafka_bootstrap, topic)
    big = b"v" * 3_000_000
    async with Producer(kafka_bootstrap) as producer:
        with pytest.raises(MessageSizeTooLargeError):
            await producer.send(topic, big)
    async with Producer(kafka_bootstrap, max_request_size=4_000_000) as producer:
        assert await producer.send(topic, big) == (0, 0)
    (record,) = [record async for record in replay(kafka_bootstrap, topic)]
    assert record.value == big
