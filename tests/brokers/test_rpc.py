"""RPC over RabbitMQ: concurrent calls get their own answers; timeouts are named errors
and leave no request or reply behind."""

from __future__ import annotations

import asyncio

import pytest

from sdlab.brokers import (
    BrokerError,
    ConsumerStopped,
    RemoteError,
    RpcClient,
    RpcServer,
    RpcTimeout,
    Unroutable,
)
from sdlab.brokers.rabbit import QUORUM, Rabbit
from sdlab.brokers.rpc import ERROR_HEADER
from sdlab.brokers.tutorials import fib_text
from tests.brokers.conftest import Made, proxied
from tests.helpers import eventually


async def test_concurrent_calls_each_get_their_own_answer(
    rabbitmq_url: str, namespace: str, made: Made
):
    queue = made.queue(f"{namespace}.rpc")

    async def square(request: str) -> str:
        n = int(request)
        await asyncio.sleep((n % 7) / 100)  # answers come back out of order
        return str(n * n)

    async with (
        await Rabbit.connect(rabbitmq_url) as server_side,
        await Rabbit.connect(rabbitmq_url) as client_side,
        RpcServer(server_side, square, queue, prefetch=20) as server,
        RpcClient(client_side, queue, timeout=20) as client,
    ):
        answers = await asyncio.gather(*(client.call(str(n)) for n in range(200)))
    assert answers == [str(n * n) for n in range(200)]
    assert server.answered == 200
    assert client.late_replies == 0


async def test_two_clients_on_one_server_never_see_each_others_answers(
    rabbitmq_url: str, namespace: str, made: Made
):
    queue = made.queue(f"{namespace}.rpc")
    async with (
        await Rabbit.connect(rabbitmq_url) as rabbit,
        RpcServer(rabbit, str.upper, queue, prefetch=10),
        RpcClient(rabbit, queue) as alice,
        RpcClient(rabbit, queue) as bob,
    ):
        got = await asyncio.gather(
            *(alice.call(f"alice {i}") for i in range(50)),
            *(bob.call(f"bob {i}") for i in range(50)),
        )
    assert got == [f"ALICE {i}" for i in range(50)] + [f"BOB {i}" for i in range(50)]


async def test_no_server_is_a_timeout_and_the_request_does_not_wait_for_one(
    rabbit: Rabbit, namespace: str, made: Made
):
    queue = made.queue(f"{namespace}.rpc")
    await rabbit.declare_queue(queue, arguments=QUORUM)  # a server declared it, then died
    async with RpcClient(rabbit, queue) as client:
        with pytest.raises(RpcTimeout, match="no reply"):
            await client.call("anyone?", timeout=0.3)

    # The request expired with the call: a server that starts now gets nothing stale.
    async def waiting() -> int:
        channel = await rabbit.connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        await channel.close()
        return declared.declaration_result.message_count or 0

    assert await eventually(waiting, 0) == 0
    calls: list[str] = []
    async with (
        RpcServer(rabbit, lambda r: calls.append(r) or "late", queue),
        RpcClient(rabbit, queue) as client,
    ):
        assert await client.call("fresh") == "late"
    assert calls == ["fresh"]


async def test_a_late_reply_is_dropped_not_given_to_the_next_call(
    rabbit: Rabbit, namespace: str, made: Made
):
    queue = made.queue(f"{namespace}.rpc")
    release = asyncio.Event()

    async def slow_then_fast(request: str) -> str:
        if request == "slow":
            await release.wait()
        return f"answer to {request}"

    async with (
        RpcServer(rabbit, slow_then_fast, queue, prefetch=2),
        RpcClient(rabbit, queue) as client,
    ):
        with pytest.raises(RpcTimeout):
            await client.call("slow", timeout=0.3)
        release.set()  # the server answers the timed-out call now

        async def late() -> int:
            return client.late_replies

        assert await eventually(late, 1) == 1
        assert await client.call("fast") == "answer to fast"


async def test_an_answer_for_a_client_that_left_is_dropped_not_queued(
    rabbit: Rabbit, namespace: str, made: Made
):
    queue = made.queue(f"{namespace}.rpc")
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(request: str) -> str:
        started.set()
        await release.wait()
        return "too late"

    async with RpcServer(rabbit, slow, queue) as server:
        async with RpcClient(rabbit, queue) as client:
            call = asyncio.create_task(client.call("x", timeout=30))
            await started.wait()
        with pytest.raises(BrokerError, match="closed before the reply"):
            await call  # the client closed under its pending call
        release.set()

        async def orphaned() -> int:
            return server.orphaned

        assert await eventually(orphaned, 1) == 1


async def test_a_failing_handler_is_a_remote_error(rabbit: Rabbit, namespace: str, made: Made):
    queue = made.queue(f"{namespace}.rpc")

    def divide(request: str) -> str:
        return str(1 / int(request))

    async with RpcServer(rabbit, divide, queue), RpcClient(rabbit, queue) as client:
        with pytest.raises(RemoteError, match="ZeroDivisionError: division by zero"):
            await client.call("0")
        assert await client.call("4") == "0.25"  # the server lives on


async def test_an_error_reply_has_no_body_a_client_could_take_for_an_answer(
    rabbit: Rabbit, namespace: str, made: Made
):
    """The tutorial's client reads a reply's body as the number: an error goes in the
    `x-error` header, the body stays empty."""
    queue = made.queue(f"{namespace}.rpc")
    async with RpcServer(rabbit, fib_text, queue):
        replies = await rabbit.declare_queue(durable=False, exclusive=True)
        async with rabbit.consume(replies, no_ack=True) as messages:
            await rabbit.publish("", queue, "-1", reply_to=replies, correlation_id="c1")
            async with asyncio.timeout(10):
                reply = await anext(aiter(messages))
    assert (reply.correlation_id, reply.body) == ("c1", b"")
    assert reply.headers[ERROR_HEADER] == "ValueError: fib(-1): n must be from 0 to 10000"


async def test_an_answer_that_is_not_text_or_bytes_is_a_remote_error(
    rabbit: Rabbit, namespace: str, made: Made
):
    """None or a float would stop the server as the reply is built; an int would be
    sent as that many NUL bytes. Each is the handler's error, and the server goes on."""
    queue = made.queue(f"{namespace}.rpc")
    answers: dict[str, object] = {"none": None, "float": 0.5, "int": 3, "list": ["a"]}

    async def sloppy(request: str) -> object:
        return answers.get(request, request.encode())

    async with RpcServer(rabbit, sloppy, queue), RpcClient(rabbit, queue, timeout=5) as client:
        for request, answer in answers.items():
            kind = type(answer).__name__
            with pytest.raises(RemoteError, match=f"TypeError: the handler returned {kind} "):
                await client.call(request)
        assert await client.call("bytes") == "bytes"  # the server lives on, bytes as they are


async def test_calling_a_queue_nobody_declared_is_unroutable(rabbit: Rabbit, namespace: str):
    async with RpcClient(rabbit, f"{namespace}.nobody") as client:
        with pytest.raises(Unroutable, match="is an RPC server running"):
            await client.call("hello?")


async def test_calls_fail_at_once_when_the_client_connection_drops(
    rabbit: Rabbit, rabbitmq_url: str, namespace: str, made: Made
):
    """A client that lost its connection cannot get its answers: its pending calls fail
    with that, not with an `RpcTimeout` blaming the server once their time is out."""
    queue = made.queue(f"{namespace}.rpc")
    started = asyncio.Event()

    async def slow(request: str) -> str:
        started.set()
        await asyncio.sleep(60)
        return "too late"

    async with RpcServer(rabbit, slow, queue), proxied(rabbitmq_url) as (proxy, url):
        client_side = await Rabbit.connect(url)
        client = RpcClient(client_side, queue)
        await client.start()
        call = asyncio.create_task(client.call("x", timeout=60))
        await started.wait()
        proxy.cut()
        with pytest.raises(ConsumerStopped, match="connection"):
            await asyncio.wait_for(call, 30)
        await client.close()
        await client_side.close()
