"""Kafka on aiokafka: partitioned topics, keyed production, consumer groups that commit
after processing, replay, and lag.

    await create_topic(bootstrap, "orders", partitions=3)
    async with Producer(bootstrap) as producer:
        await producer.send("orders", "paid", key="order-42")   # same key, same partition
    async with GroupConsumer(bootstrap, "orders", "billing") as consumer:
        async for record in consumer:
            ...                                              # process it, then
            consumer.ack(record)                             # committed before the next fetch

At-least-once: an offset is committed only when every record before it in its partition
was acked, so a consumer that dies leaves its unacked records to be read again by the
member the group gives its partitions to. Acks are committed in one request before each
fetch, when partitions are taken away in a rebalance, and on `stop()`. What was fetched
before a rebalance is not handed out after it: each partition starts over from its
commit, so a record held (unacked) across a rebalance is never committed past.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    InvalidPartitionsError,
    InvalidTopicError,
    KafkaConnectionError,
    MessageSizeTooLargeError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
    for_code,
)
from aiokafka.partitioner import DefaultPartitioner

from sdlab.addresses import bootstrap_servers
from sdlab.brokers.errors import BrokerUnavailable, InvalidUrl, TopologyMismatch
from sdlab.brokers.rabbit import Body, encode
from sdlab.failure import describe

logger = logging.getLogger("sdlab.brokers")

TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")
"""Apache Kafka's rule for a topic name (besides: not `.` nor `..`). tansu takes any
name, '' and 300 characters included, which no other Kafka broker would."""


async def started(client: Any, bootstrap: str) -> None:
    """`client.start()` (a producer, consumer or admin client), with a broker that cannot
    be reached raising `BrokerUnavailable` naming it: aiokafka's KafkaConnectionError
    names neither the address nor the cause (it logs the cause), so the first address is
    tried once more, by a plain TCP connect, to say which."""
    try:
        await client.start()
    except KafkaConnectionError as exc:
        first = bootstrap.split(",")[0]
        host, _, port = first.rpartition(":")
        try:
            async with asyncio.timeout(2):
                _, writer = await asyncio.open_connection(
                    host.strip("[]") or "127.0.0.1", int(port)
                )
            writer.close()
            reason = "it accepts connections but does not answer as a Kafka broker"
        except (OSError, ValueError) as probe:
            reason = describe(probe)
        raise BrokerUnavailable("Kafka", bootstrap, reason) from exc


def bootstrap_of(url: str) -> str:
    """The bootstrap servers (`h1:9092,h2:9092`) of `kafka://h1:9092,h2:9092`, or
    `InvalidUrl` for another scheme or a port that is not a number."""
    form = "kafka://host:port[,host:port...]"
    if not url.startswith("kafka://"):
        raise InvalidUrl(f"not a Kafka URL (scheme {url.partition(':')[0]!r}): {form}")
    servers = bootstrap_servers(url)
    for server in servers.split(","):
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit() or int(port) > 65535:
            raise InvalidUrl(f"{server!r} is not host:port (a port from 0 to 65535): {form}")
    return servers


def check_topic(topic: str) -> str:
    """`topic` if Apache Kafka would take it as a topic name, else `InvalidTopicError`
    (the error Kafka answers with), before the broker sees it."""
    if not TOPIC_NAME.fullmatch(topic) or topic in (".", ".."):
        shown = topic if len(topic) <= 40 else f"{topic[:40]}... ({len(topic)} characters)"
        raise InvalidTopicError(
            f"topic {shown!r}: a name is 1 to 249 of a-z A-Z 0-9 . _ -, not . or .."
        )
    return topic


async def create_topic(bootstrap: str, topic: str, *, partitions: int | None = None) -> int:
    """Create `topic` with `partitions` partitions (None: 1); returns how many it has.

    A topic that exists is left as it is, records and all: with `partitions` None or its
    own count that is no error (declaring is idempotent), with another count it raises
    `TopologyMismatch`, as RabbitMQ does for a queue declared otherwise. The count is
    never changed to match: Kafka cannot take partitions away, and adding some sends keys
    to other partitions (per-key order breaks), which is an operator's decision.

    Whatever else the broker refuses raises aiokafka's error for it (`InvalidTopicError`,
    ...): the admin client returns per-topic error codes rather than raising them. A count
    below 1 raises `InvalidPartitionsError` here, as Apache Kafka would (tansu creates a
    topic with no partition), and so does a name Kafka refuses (`check_topic`)."""
    check_topic(topic)
    if partitions is not None and partitions < 1:
        raise InvalidPartitionsError(f"topic {topic!r}: {partitions} partitions (1 or more)")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await started(admin, bootstrap)
    try:
        response = await admin.create_topics(
            [NewTopic(topic, partitions or 1, replication_factor=1)]
        )
        ((_, code, *message),) = response.topic_errors  # v1+ add the broker's message
        if code != TopicAlreadyExistsError.errno:
            _raise_for(code, topic, *message)
            return partitions or 1
        existing = await _partition_count(admin, topic)
        if partitions is not None and existing != partitions:
            raise TopologyMismatch(
                f"topic {topic!r} exists with {existing} partitions, not {partitions} "
                "(delete it first to change the count)"
            )
        return existing
    finally:
        await admin.close()


async def delete_topic(bootstrap: str, topic: str) -> None:
    """Delete `topic` and its records; nothing happens if it does not exist. Whatever
    else the broker refuses raises aiokafka's error for it."""
    check_topic(topic)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await started(admin, bootstrap)
    try:
        response = await admin.delete_topics([topic])
        ((_, code, *message),) = response.topic_error_codes
        if code != UnknownTopicOrPartitionError.errno:
            _raise_for(code, topic, *message)
    finally:
        await admin.close()


async def _partition_count(admin: AIOKafkaAdminClient, topic: str) -> int:
    (described,) = await admin.describe_topics([topic])
    _raise_for(described["error_code"], topic)
    return len(described["partitions"])


def _raise_for(code: int, topic: str, message: str | None = None) -> None:
    """Raise aiokafka's named error for a per-topic error code of an admin response."""
    if code != 0:
        raise for_code(code)(f"topic {topic!r}: {message or 'refused by the broker'}")


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp: int  # milliseconds since the epoch

    @property
    def text(self) -> str:
        return self.value.decode()


class Producer:
    """Sends records and waits for the broker's acknowledgement (`acks="all"`).

    A record with a key goes to the partition the key hashes to (murmur2, as every Kafka
    client), so all records of one key are in one partition, in the order sent: aiokafka
    keeps one request in flight per broker, so a retried batch cannot overtake another.

    `max_request_size` (bytes) bounds a record with its key and headers, as the Java
    client's setting of that name, 1 MiB by default: a larger one raises
    `MessageSizeTooLargeError` before it is sent. The broker has a limit of its own."""

    def __init__(
        self, bootstrap: str, *, linger_ms: int = 0, max_request_size: int = 1_048_576
    ) -> None:
        self._bootstrap = bootstrap
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            linger_ms=linger_ms,
            max_request_size=max_request_size,
        )
        self._topics: set[str] = set()  # names checked already
        self._partitioner = DefaultPartitioner()

    async def start(self) -> None:
        await started(self._producer, self._bootstrap)

    async def stop(self) -> None:
        await self._producer.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def send(
        self, topic: str, value: Body, *, key: Body | None = None, partition: int | None = None
    ) -> tuple[int, int]:
        """Send one record; returns (partition, offset) once the broker has it."""
        if topic not in self._topics:
            self._topics.add(check_topic(topic))
        sent = await self._producer.send_and_wait(
            topic,
            encode(value),
            key=None if key is None else encode(key),
            partition=partition,
        )
        return sent.partition, sent.offset

    async def send_many(
        self, topic: str, records: Sequence[tuple[Body, Body | None]]
    ) -> list[tuple[int, int]]:
        """Send (value, key) records and wait until the broker has them all; returns
        their (partition, offset)s in order. The records go as whole batches, one per
        partition at a time (aiokafka's `create_batch`/`send_batch`), each record to the
        partition its key hashes to as `send` would put it (murmur2; no key: one chosen
        at random per call): no task per record waits for room in a batch, and the
        accumulator does its work per batch, not per record."""
        if topic not in self._topics:
            self._topics.add(check_topic(topic))
        await self._producer.client._wait_on_metadata(topic)
        partitions = sorted(self._producer.client.cluster.partitions_for_topic(topic) or ())
        if not partitions:
            raise UnknownTopicOrPartitionError(f"topic {topic!r}: no partitions known")
        unkeyed = random.choice(partitions)
        by_partition: dict[int, list[tuple[int, bytes, bytes | None]]] = {}
        for i, (value, key) in enumerate(records):
            k = None if key is None else encode(key)
            p = unkeyed if k is None else self._partitioner(k, partitions, partitions)
            by_partition.setdefault(p, []).append((i, encode(value), k))
        where: list[tuple[int, int]] = [(0, 0)] * len(records)
        sent: list[tuple[int, list[int], asyncio.Future[Any]]] = []
        for p, items in by_partition.items():
            batch, indexes = self._producer.create_batch(), list[int]()
            for i, value, key in items:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    if not indexes:
                        raise MessageSizeTooLargeError(f"a record of {len(value):,} bytes")
                    sent.append((p, indexes, await self._send(batch, topic, p)))
                    batch, indexes = self._producer.create_batch(), list[int]()
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        raise MessageSizeTooLargeError(f"a record of {len(value):,} bytes")
                indexes.append(i)
            sent.append((p, indexes, await self._send(batch, topic, p)))
        for p, indexes, future in sent:
            base = (await future).offset
            for n, i in enumerate(indexes):
                where[i] = (p, base + n)
        return where

    async def _send(self, batch: Any, topic: str, partition: int) -> asyncio.Future[Any]:
        return await self._producer.send_batch(batch, topic, partition=partition)


@dataclass
class _Partition:
    """Where one assigned partition stands: what was handed out and what was acked."""

    next_offset: int = 0  # the offset after the last record handed out
    unacked: set[int] = field(default_factory=set)
    committed: int | None = None

    def safe_offset(self) -> int:
        """The offset the group may resume from without skipping an unacked record."""
        return min(self.unacked) if self.unacked else self.next_offset


class GroupConsumer(ConsumerRebalanceListener):
    """A member of consumer group `group` reading `topic`: the group shares the
    partitions out among its members, and each record is handled by one member.

    Iterate to get records; `ack(record)` when it is processed. A group with no
    committed offset starts from the beginning (`from_beginning=False`: from the end).
    `session_timeout` is how long the group waits for a silent member before giving its
    partitions to the others; `fetch_max_wait`, how long the broker may hold a fetch
    open waiting for records (tansu holds it that long even when records arrive)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        group: str,
        *,
        from_beginning: bool = True,
        session_timeout: float = 10.0,
        max_records: int = 500,
        fetch_max_wait: float = 0.5,
    ) -> None:
        self.topic = check_topic(topic)
        self.group = group
        self.session_timeout = session_timeout
        self.max_records = max_records
        self._bootstrap = bootstrap
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if from_beginning else "latest",
            session_timeout_ms=round(session_timeout * 1000),
            heartbeat_interval_ms=max(100, round(session_timeout * 1000 / 4)),
            fetch_max_wait_ms=round(fetch_max_wait * 1000),
        )
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._rebalances = 0  # how many times a rebalance took the partitions back

    async def start(self) -> None:
        self._consumer.subscribe([self.topic], listener=self)
        await started(self._consumer, self._bootstrap)

    async def stop(self) -> None:
        """Commit what was acked and leave the group. With the broker gone, aiokafka would
        retry the commit for ever: it is given up after `session_timeout` (by then the
        group has dropped this member anyway), and the records are read again."""
        try:
            async with asyncio.timeout(self.session_timeout):
                await self.commit()
        except TimeoutError:
            logger.warning(
                "group %s: no answer to the last commit within the session timeout; "
                "the records acked since the previous one will be read again",
                self.group,
            )
        finally:
            try:
                await self._consumer.stop()
            except asyncio.CancelledError:
                # With the broker gone, aiokafka's stop() lets the cancellation of a fetch
                # of its own escape (aio-libs/aiokafka#647): raise only one meant for us.
                if (task := asyncio.current_task()) is not None and task.cancelling():
                    raise

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def assignment(self) -> set[int]:
        """The partitions this member reads now."""
        return {tp.partition for tp in self._consumer.assignment()}

    async def __aiter__(self) -> AsyncIterator[Record]:
        while True:
            await self.commit()
            batches = await self._consumer.getmany(timeout_ms=1000, max_records=self.max_records)
            fetched_in = self._rebalances
            for tp, record in ((tp, r) for tp, records in batches.items() for r in records):
                if self._rebalances != fetched_in:
                    # A rebalance took the partitions back while this batch was handed
                    # out: the rest of it is stale (each partition starts over from its
                    # commit), and a record of it acked would be counted in a new state
                    # of its partition that knows nothing of the records held before.
                    break
                state = self._partitions.setdefault(tp, _Partition())
                state.unacked.add(record.offset)
                state.next_offset = record.offset + 1
                yield Record(
                    tp.topic,
                    tp.partition,
                    record.offset,
                    record.key,
                    record.value,
                    record.timestamp,
                )

    def ack(self, record: Record) -> None:
        """Mark `record` processed; its offset is committed with the next commit."""
        state = self._partitions.get(TopicPartition(record.topic, record.partition))
        if state is not None:  # None: the partition went to another member meanwhile
            state.unacked.discard(record.offset)

    async def commit(self) -> None:
        """Commit, for each partition, the offset before which everything was acked. If
        the group refuses it (it rebalanced without this member, silent too long), the
        commit is dropped and the records are read again: the consumer goes on."""
        owned = self._consumer.assignment()
        offsets = {
            tp: state.safe_offset()
            for tp, state in self._partitions.items()
            if tp in owned and state.safe_offset() != state.committed
        }
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except CommitFailedError:
            # The group went on without this member (silent for longer than its session:
            # a stall, a pause); aiokafka rejoins it. Whoever has the partitions now
            # reads them from the last commit: what was acked since is read again.
            logger.warning(
                "group %s rebalanced without this member: its acks since the last commit "
                "are not committed, their records will be read again",
                self.group,
            )
            return
        for tp, offset in offsets.items():
            # A rebalance during the commit may have revoked the partition meanwhile
            # (on_partitions_revoked drops its state): nothing of it to record then.
            state = self._partitions.get(tp)
            if state is not None:
                state.committed = offset

    # ConsumerRebalanceListener: aiokafka calls these during a rebalance.
    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self._rebalances += 1
        try:
            await self.commit()  # what was acked, before another member takes over
        finally:
            for tp in revoked:
                self._partitions.pop(tp, None)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        pass


@dataclass(frozen=True)
class Lag:
    partition: int
    committed: int | None  # None: the group never committed on this partition
    end: int  # the offset the next record will get
    lag: int  # records the group has yet to process


async def group_lag(bootstrap: str, topic: str, group: str) -> list[Lag]:
    """How far behind the end of each partition of `topic` the group's commits are."""
    check_topic(topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    try:
        await started(consumer, bootstrap)
        tps = await _partitions(consumer, topic)
        starts = await consumer.beginning_offsets(tps)
        ends = await _ends(consumer, tps)
        committed = await asyncio.gather(*(consumer.committed(tp) for tp in tps))
        return [
            Lag(tp.partition, done, ends[tp], ends[tp] - (starts[tp] if done is None else done))
            for tp, done in zip(tps, committed, strict=True)
        ]
    finally:
        await consumer.stop()


async def replay(
    bootstrap: str, topic: str, *, offset: int = 0, partitions: Iterable[int] | None = None
) -> AsyncIterator[Record]:
    """Every record of `topic` from `offset` on (0: from the beginning) in each of
    `partitions` (default: all), until the replay has caught up with the end.
    Outside any group: nothing is committed and no member is disturbed. A partition the
    topic does not have raises `UnknownTopicOrPartitionError` at once."""
    check_topic(topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        await started(consumer, bootstrap)
        tps = await _partitions(consumer, topic, partitions)
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, offset)
        left = set(tps)
        while left:
            batches = await consumer.getmany(*left, timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:
                    yield Record(
                        topic,
                        tp.partition,
                        record.offset,
                        record.key,
                        record.value,
                        record.timestamp,
                    )
            for tp in list(left):
                end = consumer.highwater(tp)  # from the fetch: see _ends()
                if end is not None and await consumer.position(tp) >= end:
                    left.discard(tp)
    finally:
        await consumer.stop()


async def _partitions(
    consumer: AIOKafkaConsumer, topic: str, chosen: Iterable[int] | None = None
) -> list[TopicPartition]:
    await consumer.topics()  # fetches the metadata that partitions_for_topic reads
    known = consumer.partitions_for_topic(topic)
    if not known:
        raise UnknownTopicOrPartitionError(f"no topic {topic!r}")
    wanted = known if chosen is None else set(chosen)
    if missing := wanted - known:
        # aiokafka would wait for ever for a fetch of a partition that does not exist.
        raise UnknownTopicOrPartitionError(
            f"topic {topic!r} has partitions 0 to {max(known)}: "
            f"no partition {', '.join(map(str, sorted(missing)))}"
        )
    return [TopicPartition(topic, p) for p in sorted(wanted)]


async def _ends(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    """The offset after the last record of each partition.

    tansu 0.6 answers ListOffsets (`end_offsets()`) with the offset after the first
    record of the last batch, not after its last record: after a batch of 10 records it
    says 1. The high watermark in a fetch response is right, so take the larger of the
    two (on Apache Kafka they agree)."""
    listed = await consumer.end_offsets(tps)
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, listed[tp])
    for _ in range(5):
        if all(consumer.highwater(tp) is not None for tp in tps):
            break
        await consumer.getmany(*tps, timeout_ms=200, max_records=1)
    return {tp: max(listed[tp], consumer.highwater(tp) or 0) for tp in tps}
