"""The RabbitMQ patterns on the real broker: queues, work queues, fanout, direct, topics,
publisher confirms, and what happens when declarations disagree."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage
from aiormq.exceptions import ChannelLockedResource, ChannelNotFoundEntity

from sdlab.brokers import (
    ConsumerStopped,
    Exchange,
    NotConfirmed,
    Queue,
    Rabbit,
    TopologyMismatch,
    Unroutable,
    text,
)
from tests.brokers.conftest import Made, proxied


async def take(
    messages: AsyncIterator[AbstractIncomingMessage], n: int, *, ack: bool = True
) -> list[AbstractIncomingMessage]:
    """The next `n` messages (acked), or fail after 10 s."""
    got: list[AbstractIncomingMessage] = []
    async with asyncio.timeout(10):
        async for message in messages:
            got.append(message)
            if ack:
                await message.ack()
            if len(got) == n:
                break
    return got


async def test_hello_sends_text_to_the_named_queue(rabbit: Rabbit, namespace: str, made: Made):
    queue = Queue(rabbit, made.queue(f"{namespace}.hello"))
    for word in ["Hello", "World", "héllo wörld ✓"]:
        await queue.send(word)
    async with queue.consume() as messages:
        got = await take(messages, 3)
    assert [text(m) for m in got] == ["Hello", "World", "héllo wörld ✓"]
    assert got[2].body == "héllo wörld ✓".encode()  # UTF-8 on the wire, as the tutorials


async def test_a_queue_is_a_durable_quorum_queue_as_in_the_tutorials(
    rabbit: Rabbit, namespace: str, made: Made
):
    name = made.queue(f"{namespace}.tasks")
    await Queue(rabbit, name, persistent=True).send("task")
    # Declaring it as the current tutorials do succeeds only if the settings are equal.
    channel = await rabbit.connection.channel()
    same = await channel.declare_queue(
        name, durable=True, arguments={"x-queue-type": "quorum"}, passive=False
    )
    assert same.declaration_result.message_count == 1
    await channel.close()


async def test_work_queue_messages_are_persistent_and_unacked_ones_come_back(
    rabbit: Rabbit, namespace: str, made: Made
):
    tasks = Queue(rabbit, made.queue(f"{namespace}.work"), persistent=True)
    await tasks.send("resize photo 42")
    async with tasks.consume() as messages:
        (first,) = await take(messages, 1, ack=False)
    # The consumer went away without acking: the broker gives the task out again.
    async with tasks.consume() as messages:
        (again,) = await take(messages, 1)
    assert first.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert (first.redelivered, again.redelivered) == (False, True)
    assert text(again) == "resize photo 42"


@pytest.mark.parametrize(("prefetch", "fair"), [(1, True), (0, False)], ids=["prefetch 1", "none"])
async def test_prefetch_1_gives_a_slow_workers_share_to_the_fast_one(
    rabbitmq_url: str, namespace: str, made: Made, prefetch: int, fair: bool
):
    """One worker never finishes a task (it takes what it is given, and acks nothing);
    with prefetch 1 it holds one task and the other worker does the other 19. Without a
    prefetch limit the broker deals tasks round robin: the stuck worker sits on half."""
    name = made.queue(f"{namespace}.fair")
    slow_got: list[str] = []
    fast_got: list[str] = []
    all_dealt = asyncio.Event()

    def dealt(into: list[str], message: AbstractIncomingMessage) -> None:
        into.append(text(message))
        if len(slow_got) + len(fast_got) == 20:
            all_dealt.set()

    async with (
        await Rabbit.connect(rabbitmq_url) as slow_conn,
        await Rabbit.connect(rabbitmq_url) as fast_conn,
        await Rabbit.connect(rabbitmq_url) as producer,
    ):

        async def slow_worker() -> None:
            async with Queue(slow_conn, name, persistent=True).consume(
                prefetch=prefetch
            ) as messages:
                async for message in messages:
                    dealt(slow_got, message)  # and never acked

        async def fast_worker() -> None:
            async with Queue(fast_conn, name, persistent=True).consume(
                prefetch=prefetch
            ) as messages:
                async for message in messages:
                    dealt(fast_got, message)
                    await message.ack()

        await Queue(producer, name, persistent=True).declare()
        workers = [asyncio.create_task(slow_worker()), asyncio.create_task(fast_worker())]
        await asyncio.sleep(0.3)  # both consumers registered before the first task
        tasks = Queue(producer, name, persistent=True)
        for i in range(20):
            await tasks.send(f"task {i}")
        async with asyncio.timeout(15):
            await all_dealt.wait()
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    if fair:
        assert (len(slow_got), len(fast_got)) == (1, 19)
    else:
        assert len(slow_got) >= 5  # round robin: about half


async def test_fanout_gives_every_subscriber_every_message(
    rabbit: Rabbit, namespace: str, made: Made
):
    logs = Exchange(rabbit, made.exchange(f"{namespace}.logs"), "fanout")
    assert await logs.publish("before anyone listens") is False  # dropped, and we know it
    async with logs.subscribe() as first, logs.subscribe() as second:
        for line in ["one", "two", "three"]:
            assert await logs.publish(line) is True
        a = [text(m) for m in await take(first, 3)]
        b = [text(m) for m in await take(second, 3)]
    assert a == b == ["one", "two", "three"]


async def test_a_subscription_is_a_server_named_exclusive_queue(
    rabbitmq_url: str, rabbit: Rabbit, namespace: str, made: Made
):
    """As in the tutorial: the broker names each subscriber's queue (amq.gen-...), no
    other connection may use it, and it is gone when the subscription ends."""
    declared: list[str] = []

    class Noting(Rabbit):  # a plain connection that notes the queue names it is given
        async def declare_queue(self, name: str = "", **options: Any) -> str:
            declared.append(await super().declare_queue(name, **options))
            return declared[-1]

    async def look_up(queue: str) -> None:  # from another connection than the subscriber's
        channel = await rabbit.connection.channel()
        try:
            await channel.declare_queue(queue, passive=True)
        finally:
            if not channel.is_closed:
                await channel.close()

    async with await Noting.connect(rabbitmq_url) as subscriber:
        logs = Exchange(subscriber, made.exchange(f"{namespace}.logs"), "fanout")
        async with logs.subscribe():
            (queue,) = declared
            assert queue.startswith("amq.gen-")
            with pytest.raises(ChannelLockedResource, match="exclusive"):
                await look_up(queue)
        with pytest.raises(ChannelNotFoundEntity):
            await look_up(queue)


async def test_direct_routing_by_severity(rabbit: Rabbit, namespace: str, made: Made):
    logs = Exchange(rabbit, made.exchange(f"{namespace}.direct"), "direct")
    async with logs.subscribe("warning", "error") as serious, logs.subscribe("info") as chatty:
        for severity in ["info", "warning", "error", "debug", "info"]:
            await logs.publish(f"a {severity} line", key=severity)
        got_serious = [(m.routing_key, text(m)) for m in await take(serious, 2)]
        got_chatty = [m.routing_key for m in await take(chatty, 2)]
        assert await logs.publish("nobody wants this", key="debug") is False
    assert got_serious == [("warning", "a warning line"), ("error", "a error line")]
    assert got_chatty == ["info", "info"]


async def test_a_direct_subscription_needs_a_binding_key(rabbit: Rabbit):
    with pytest.raises(ValueError, match="binding key"):
        async with Exchange(rabbit, "unused", "direct").subscribe():
            pass


# The tutorial's examples (quick.orange.rabbit, lazy.#, ...) and the edges of `*` and `#`.
TOPIC_TABLE = [
    ("*.orange.*", "quick.orange.rabbit", True),
    ("*.orange.*", "lazy.orange.elephant", True),
    ("*.orange.*", "quick.brown.fox", False),
    ("*.orange.*", "orange", False),  # `*` is exactly one word: not zero
    ("*.orange.*", "quick.orange.new.rabbit", False),  # ... and not two
    ("*.*.rabbit", "quick.orange.rabbit", True),
    ("*.*.rabbit", "quick.orange.male.rabbit", False),
    ("lazy.#", "lazy.orange.elephant", True),
    ("lazy.#", "lazy.orange.male.rabbit", True),
    ("lazy.#", "lazy", True),  # `#` is zero or more words
    ("lazy.#", "lazyx.orange", False),  # words, not prefixes
    ("#", "anything.at.all", True),
    ("#", "", True),
    ("#.critical", "kern.critical", True),
    ("#.critical", "critical", True),
    ("#.critical", "kern.disk.critical", True),
    ("kern.*", "kern.critical", True),
    ("kern.*", "kern", False),
    ("a.#.z", "a.z", True),
    ("a.#.z", "a.b.c.z", True),
    ("a.#.z", "a.b.c", False),
    ("a.*.#", "a", False),
    ("a.*.#", "a.b", True),
    ("quick.orange.rabbit", "quick.orange.rabbit", True),  # no wildcard: exact match
    ("quick.orange.rabbit", "quick.orange", False),
    ("Kern.*", "kern.critical", False),  # case matters
]


@pytest.mark.parametrize(
    ("binding_key", "routing_key", "delivered"), TOPIC_TABLE, ids=lambda v: repr(v)
)
async def test_topic_routing_table(
    rabbit: Rabbit,
    namespace: str,
    made: Made,
    binding_key: str,
    routing_key: str,
    delivered: bool,
):
    topic = Exchange(rabbit, made.exchange(f"{namespace}.topic"), "topic")
    async with topic.subscribe(binding_key) as messages:
        routed = await topic.publish("x", key=routing_key)
        assert routed is delivered
        if delivered:
            (message,) = await take(messages, 1)
            assert message.routing_key == routing_key


async def test_a_publish_returns_once_the_broker_has_the_message(
    rabbit: Rabbit, namespace: str, made: Made
):
    queue = Queue(rabbit, made.queue(f"{namespace}.confirmed"), persistent=True)
    channel = await rabbit.connection.channel()
    for i in range(1, 51):
        await queue.send(f"m{i}")
        # No waiting: once send() returned, the queue counts the message.
        counted = await channel.declare_queue(queue.name, passive=True)
        assert counted.declaration_result.message_count == i
    await channel.close()


async def test_a_message_the_broker_refuses_raises_not_confirmed(
    rabbit: Rabbit, namespace: str, made: Made
):
    full = Queue(
        rabbit,
        made.queue(f"{namespace}.full"),
        arguments={"x-max-length": 1, "x-overflow": "reject-publish"},  # classic: exact
    )
    await full.send("fits")
    with pytest.raises(NotConfirmed, match="refused"):
        await full.send("does not fit")
    # The publishing channel survived the refusal.
    await Queue(rabbit, made.queue(f"{namespace}.after")).send("still works")


async def test_a_declaration_that_disagrees_is_a_named_error_and_harms_nothing(
    rabbit: Rabbit, namespace: str, made: Made
):
    name = made.queue(f"{namespace}.classic")
    await rabbit.declare_queue(name, durable=False, arguments={})  # as older tutorials did
    with pytest.raises(TopologyMismatch, match="inequivalent arg 'durable'"):
        await Queue(rabbit, name).send("x")
    # The declaration failed on a channel of its own: the publishing channel is unharmed.
    assert await rabbit.publish("", name, "x") is True


async def test_an_exchange_of_another_type_is_a_named_error(
    rabbit: Rabbit, namespace: str, made: Made
):
    name = made.exchange(f"{namespace}.x")
    await Exchange(rabbit, name, "fanout").publish("x")
    with pytest.raises(TopologyMismatch, match="inequivalent arg 'type'"):
        await Exchange(rabbit, name, "topic").publish("x", key="a.b")
    assert await Exchange(rabbit, name, "fanout").publish("x") is False


async def test_a_publish_to_an_exchange_that_is_gone_is_a_named_error_and_harms_nothing(
    rabbit: Rabbit, namespace: str, made: Made
):
    """The broker answers a publish to a missing exchange by closing the channel it came
    on, which every publish of the connection shares: the error is named, and the
    publishes after it still work."""
    logs = Exchange(rabbit, made.exchange(f"{namespace}.logs"), "fanout")
    assert await logs.publish("one") is False
    await rabbit.delete_exchange(logs.name)  # its owner took it down
    with pytest.raises(Unroutable, match=f"no exchange '{logs.name}'"):
        await logs.publish("two")
    tasks = Queue(rabbit, made.queue(f"{namespace}.after"))
    await tasks.send("still works")
    async with tasks.consume() as messages:
        assert [text(m) for m in await take(messages, 1)] == ["still works"]


async def test_a_consumer_whose_connection_drops_gets_a_named_error_and_loses_nothing(
    rabbitmq_url: str, namespace: str, made: Made
):
    """A dropped connection must not look like the end of the queue: the consumer's loop
    raises, and the message it held unacked is delivered again to the next consumer."""
    name = made.queue(f"{namespace}.work")
    async with proxied(rabbitmq_url) as (proxy, url), await Rabbit.connect(url) as doomed:
        tasks = Queue(doomed, name, persistent=True)
        await tasks.send("resize photo 42")

        async def work() -> None:
            async with asyncio.timeout(10), tasks.consume() as messages:
                async for _ in messages:  # held, not acked, when the network fails
                    proxy.cut()

        with pytest.raises(ConsumerStopped, match="connection to the broker was lost"):
            await work()
    async with (
        await Rabbit.connect(rabbitmq_url) as rabbit,
        Queue(rabbit, name, persistent=True).consume() as messages,
    ):
        (again,) = await take(messages, 1)
    assert (text(again), again.redelivered) == ("resize photo 42", True)


async def test_a_consumer_whose_queue_is_deleted_gets_a_named_error(
    rabbit: Rabbit, namespace: str, made: Made
):
    """The broker cancels the consumers of a deleted queue: their loops raise rather than
    wait for ever for messages that cannot come."""
    tasks = Queue(rabbit, made.queue(f"{namespace}.work"))
    await tasks.send("one")

    async def work() -> None:
        async with asyncio.timeout(10), tasks.consume() as messages:
            async for message in messages:
                await message.ack()
                await rabbit.delete_queue(tasks.name)  # by its owner, say

    with pytest.raises(ConsumerStopped, match="cancelled the consumer"):
        await work()


async def test_a_subscriber_whose_connection_drops_gets_a_named_error(
    rabbitmq_url: str, namespace: str, made: Made
):
    logs = made.exchange(f"{namespace}.logs")
    async with proxied(rabbitmq_url) as (proxy, url), await Rabbit.connect(url) as doomed:

        async def listen() -> None:
            async with asyncio.timeout(10), Exchange(doomed, logs, "fanout").subscribe() as lines:
                await Exchange(doomed, logs, "fanout").publish("one")
                async for _ in lines:
                    proxy.cut()

        with pytest.raises(ConsumerStopped, match="connection to the broker was lost"):
            await listen()


async def test_publishes_sharing_a_message_id_each_get_their_own_outcome(
    rabbit: Rabbit, namespace: str, made: Made
):
    """aiormq tells which publish a returned message was by its `message_id`: two
    unconfirmed at once with the same one (a business key, a retried copy) must not
    swap outcomes, the lost one reported routed and the stored one unroutable."""
    queue = Queue(rabbit, made.queue(f"{namespace}.there"))
    await queue.declare()
    routed = await asyncio.gather(
        rabbit.publish("", f"{namespace}.nowhere", "lost", message_id="order-42"),
        rabbit.publish("", queue.name, "stored", message_id="order-42"),
    )
    assert routed == [False, True]
