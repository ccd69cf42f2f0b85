"""Interop with the official RabbitMQ tutorials, in both directions, for each pattern:
their programs (pika, as `tutorial_programs.py` has them) against our producers and
consumers. A private RabbitMQ, so that the tutorials' own names (`hello`, `task_queue`,
`logs`, ...) are used as they are, without touching the shared broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import aio_pika
import pytest
import pytest_asyncio

from sdlab import infra
from sdlab.brokers import Exchange, Queue, Rabbit, RpcClient, RpcServer, text
from sdlab.brokers.tutorials import fib_text
from tests.brokers.programs import Program

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def broker_url() -> Iterator[str]:
    with infra.rabbitmq() as broker:
        yield broker.url


@pytest_asyncio.fixture
async def rabbit(broker_url: str) -> AsyncIterator[Rabbit]:
    async with await Rabbit.connect(broker_url) as connection:
        yield connection


async def tutorial(broker_url: str, program: str, *args: str) -> Program:
    return await Program.python(
        "-m", "tests.brokers.tutorial_programs", program, *args, env={"AMQP_URL": broker_url}
    )


async def finished(program: Program) -> list[str]:
    assert await program.finish() == 0, program.lines
    return program.lines


async def first(messages: AsyncIterator[aio_pika.abc.AbstractIncomingMessage]):  # type: ignore[no-untyped-def]
    async with asyncio.timeout(30):
        message = await anext(aiter(messages))
    await message.ack()
    return message


# hello ------------------------------------------------------------------------------


async def test_hello_tutorial_send_to_our_consumer(broker_url: str, rabbit: Rabbit):
    assert await finished(await tutorial(broker_url, "send")) == [" [x] Sent 'Hello World!'"]
    async with Queue(rabbit, "hello").consume() as messages:
        assert text(await first(messages)) == "Hello World!"


async def test_hello_our_producer_to_tutorial_receive(broker_url: str, rabbit: Rabbit):
    receiver = await tutorial(broker_url, "receive")
    try:
        await receiver.expect("Waiting for messages")
        await Queue(rabbit, "hello").send("Hello from sdlab")
        assert await receiver.expect("Received") == " [x] Received Hello from sdlab"
    finally:
        await receiver.stop()


# task_queue -------------------------------------------------------------------------


async def test_work_tutorial_new_task_to_our_worker(broker_url: str, rabbit: Rabbit):
    await finished(await tutorial(broker_url, "new_task", "A", "task..."))
    async with Queue(rabbit, "task_queue", persistent=True).consume(prefetch=1) as tasks:
        task = await first(tasks)
    assert text(task) == "A task..."
    assert task.delivery_mode == aio_pika.DeliveryMode.PERSISTENT


async def test_work_our_producer_to_tutorial_worker(broker_url: str, rabbit: Rabbit):
    worker = await tutorial(broker_url, "worker")
    try:
        await worker.expect("Waiting for messages")
        await Queue(rabbit, "task_queue", persistent=True).send("sdlab task.")
        assert await worker.expect("Received") == " [x] Received sdlab task."
        await worker.expect("Done")  # it acked: the queue is empty again
    finally:
        await worker.stop()


# logs (fanout) ----------------------------------------------------------------------


async def test_logs_tutorial_emit_to_our_subscriber(broker_url: str, rabbit: Rabbit):
    async with Exchange(rabbit, "logs", "fanout").subscribe() as logs:
        await finished(await tutorial(broker_url, "emit_log", "warning:", "disk", "full"))
        assert text(await first(logs)) == "warning: disk full"


async def test_logs_our_producer_to_tutorial_receive_logs(broker_url: str, rabbit: Rabbit):
    receiver = await tutorial(broker_url, "receive_logs")
    try:
        await receiver.expect("Waiting for logs")
        assert await Exchange(rabbit, "logs", "fanout").publish("info: from sdlab") is True
        assert await receiver.expect(" [x] ") == " [x] info: from sdlab"
    finally:
        await receiver.stop()


# direct_logs ------------------------------------------------------------------------


async def test_routing_tutorial_emit_to_our_subscriber(broker_url: str, rabbit: Rabbit):
    async with Exchange(rabbit, "direct_logs", "direct").subscribe("error") as errors:
        await finished(await tutorial(broker_url, "emit_log_direct", "info", "ignore me"))
        await finished(await tutorial(broker_url, "emit_log_direct", "error", "disk", "failed"))
        message = await first(errors)
    assert (message.routing_key, text(message)) == ("error", "disk failed")


async def test_routing_our_producer_to_tutorial_receive_logs_direct(
    broker_url: str, rabbit: Rabbit
):
    receiver = await tutorial(broker_url, "receive_logs_direct", "warning", "error")
    try:
        await receiver.expect("Waiting for logs")
        direct_logs = Exchange(rabbit, "direct_logs", "direct")
        assert await direct_logs.publish("chatter", key="info") is False  # nobody bound
        assert await direct_logs.publish("disk 91% full", key="warning") is True
        assert await receiver.expect(" [x] ") == " [x] warning:disk 91% full"
    finally:
        await receiver.stop()


# topic_logs -------------------------------------------------------------------------


async def test_topics_tutorial_emit_to_our_subscriber(broker_url: str, rabbit: Rabbit):
    async with Exchange(rabbit, "topic_logs", "topic").subscribe("kern.*", "*.critical") as logs:
        await finished(await tutorial(broker_url, "emit_log_topic", "cron.info", "tick"))
        await finished(
            await tutorial(broker_url, "emit_log_topic", "auth.critical", "intruder", "alert")
        )
        message = await first(logs)
    assert (message.routing_key, text(message)) == ("auth.critical", "intruder alert")


async def test_topics_our_producer_to_tutorial_receive_logs_topic(broker_url: str, rabbit: Rabbit):
    receiver = await tutorial(broker_url, "receive_logs_topic", "kern.#")
    try:
        await receiver.expect("Waiting for logs")
        topic_logs = Exchange(rabbit, "topic_logs", "topic")
        assert await topic_logs.publish("not kernel", key="cron.critical") is False
        assert await topic_logs.publish("A critical kernel error", key="kern.disk.critical")
        assert await receiver.expect(" [x] ") == " [x] kern.disk.critical:A critical kernel error"
    finally:
        await receiver.stop()


# rpc_queue --------------------------------------------------------------------------


async def test_rpc_tutorial_server_answers_our_client(broker_url: str, rabbit: Rabbit):
    server = await tutorial(broker_url, "rpc_server")
    try:
        await server.expect("Awaiting RPC requests")
        async with RpcClient(rabbit, timeout=30) as client:
            assert await asyncio.gather(client.call("10"), client.call("30")) == ["55", "832040"]
    finally:
        await server.stop()


async def test_rpc_our_server_answers_tutorial_client(broker_url: str, rabbit: Rabbit):
    async with RpcServer(rabbit, fib_text):
        lines = await finished(await tutorial(broker_url, "rpc_client"))
    assert lines == [" [x] Requesting fib(30)", " [.] Got 832040"]
