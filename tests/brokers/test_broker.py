"""The common interface, the same test on both brokers: publish, consume with ack,
groups, redelivery of what was not acked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from sdlab.brokers import Broker, Message, TopologyMismatch, Unroutable, connect
from tests.brokers.conftest import Made


@pytest_asyncio.fixture(params=["rabbitmq", "kafka"])
async def broker(request: pytest.FixtureRequest, sdlab_endpoints: object) -> AsyncIterator[Broker]:
    url = sdlab_endpoints[request.param].url  # type: ignore[index]
    connected = await connect(url, session_timeout=2.0)
    try:
        yield connected
    finally:
        await connected.close()


async def take(
    broker: Broker, topic: str, group: str, n: int, *, ack: bool = True
) -> list[Message]:
    got: list[Message] = []
    async with asyncio.timeout(30), broker.consume(topic, group) as messages:
        async for message in messages:
            got.append(message)
            if ack:
                await message.ack()
            if len(got) == n:
                break
    return got


def forget(made: Made, topic: str, groups: list[str]) -> None:
    made.topic(topic)
    made.exchange(topic)
    for group in groups:
        made.queue(f"{topic}.{group}")


async def test_every_group_gets_every_message_once(broker: Broker, namespace: str, made: Made):
    topic = f"{namespace}-posts"
    forget(made, topic, ["extractor", "archive"])
    await broker.declare(topic, groups=["extractor", "archive"])
    for i in range(20):
        await broker.publish(topic, f"post {i} #tag{i % 3}", key=f"user-{i % 4}")
    extracted = await take(broker, topic, "extractor", 20)
    archived = await take(broker, topic, "archive", 20)
    expected = sorted(f"post {i} #tag{i % 3}" for i in range(20))
    assert sorted(m.text for m in extracted) == sorted(m.text for m in archived) == expected
    assert {m.key for m in extracted} == {f"user-{k}" for k in range(4)}


async def test_what_was_not_acked_is_delivered_again(broker: Broker, namespace: str, made: Made):
    topic = f"{namespace}-jobs"
    forget(made, topic, ["workers"])
    await broker.declare(topic, groups=["workers"])
    for i in range(5):
        await broker.publish(topic, f"job {i}")
    first = await take(broker, topic, "workers", 5, ack=False)
    assert len(first) == 5
    again = await take(broker, topic, "workers", 5)
    assert sorted(m.text for m in again) == [f"job {i}" for i in range(5)]


async def test_a_second_ack_does_nothing(broker: Broker, namespace: str, made: Made):
    """The same on both brokers (aio-pika alone raises on RabbitMQ): the message stays
    acked, and on Kafka the second ack frees no second `prefetch` slot."""
    topic = f"{namespace}-acked"
    forget(made, topic, ["workers"])
    await broker.declare(topic, groups=["workers"])
    for i in range(3):
        await broker.publish(topic, f"job {i}")
    async with asyncio.timeout(30), broker.consume(topic, "workers", prefetch=1) as messages:
        first = await anext(messages)
        await first.ack()
        await first.ack()
        second = await anext(messages)
        third = asyncio.ensure_future(anext(messages))
        done, _ = await asyncio.wait([third], timeout=1.0)
        assert not done  # one unacked held: prefetch 1 still
        await second.ack()
        await (await third).ack()
    assert [first.text, second.text, third.result().text] == ["job 0", "job 1", "job 2"]
    await broker.publish(topic, "job 3")
    (again,) = await take(broker, topic, "workers", 1)
    assert again.text == "job 3"  # nothing acked came back


async def test_unknown_url_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="amqp:// or kafka://"):
        await connect("redis://127.0.0.1:6379/0")


async def test_rabbitmq_refuses_a_message_no_group_would_get(
    rabbitmq_url: str, namespace: str, made: Made
):
    made.exchange(f"{namespace}-lonely")
    broker = await connect(rabbitmq_url)
    try:
        with pytest.raises(Unroutable, match="has no group"):
            await broker.publish(f"{namespace}-lonely", "anyone?")
    finally:
        await broker.close()


async def test_delete_takes_the_topic_and_its_messages(broker: Broker, namespace: str, made: Made):
    topic = f"{namespace}-gone"
    forget(made, topic, ["g", "h"])
    await broker.declare(topic, groups=["g"])
    await broker.publish(topic, "old")
    await broker.delete(topic, groups=["g"])
    await broker.declare(topic, groups=["h"])
    await broker.publish(topic, "new")
    (message,) = await take(broker, topic, "h", 1)
    assert message.text == "new"


async def test_a_consumer_holds_prefetch_unacked_messages_at_most(
    broker: Broker, namespace: str, made: Made
):
    """`prefetch` means the same on both brokers: a consumer holding that many unacked
    messages is given the next one only when it acks one."""
    topic = f"{namespace}-bounded"
    forget(made, topic, ["workers"])
    await broker.declare(topic, groups=["workers"])
    for i in range(3):
        await broker.publish(topic, f"job {i}")
    async with asyncio.timeout(30), broker.consume(topic, "workers", prefetch=2) as messages:
        held = [await anext(messages), await anext(messages)]
        third = asyncio.ensure_future(anext(messages))
        done, _ = await asyncio.wait([third], timeout=1.0)
        assert not done  # two unacked: the third waits
        await held[0].ack()
        assert (await third).text == "job 2"
        for message in [held[1], third.result()]:
            await message.ack()


async def test_kafka_declare_with_another_partition_count_is_an_error(
    sdlab_endpoints: object, namespace: str, made: Made
):
    """As RabbitMQ refuses a queue declared otherwise; asking no count takes the topic as
    it is, so a service that only publishes need not know it."""
    topic = made.topic(f"{namespace}-counted")
    url = sdlab_endpoints["kafka"].url  # type: ignore[index]
    owner, user = await connect(url), await connect(url)
    try:
        await owner.declare(topic, partitions=3)
        await user.publish(topic, "fine")  # declares it with no count
        with pytest.raises(TopologyMismatch, match="exists with 3 partitions, not 1"):
            await user.declare(topic, partitions=1)
        with pytest.raises(TopologyMismatch, match="exists with 3 partitions, not 2"):
            await owner.declare(topic, partitions=2)  # one it declared itself
        await owner.declare(topic, partitions=3)
    finally:
        await owner.close()
        await user.close()


async def test_publish_many_stores_them_all_in_order(broker: Broker, namespace: str, made: Made):
    topic = f"{namespace}-many"
    forget(made, topic, ["reader"])
    await broker.declare(topic, groups=["reader"])
    await broker.publish_many(topic, [(f"m{i}", "one key") for i in range(300)])
    got = await take(broker, topic, "reader", 300)
    assert [m.text for m in got] == [f"m{i}" for i in range(300)]  # one key: one order
