"""The RabbitMQ tutorials' programs, as async functions: each connects, does what its
tutorial program does and says the same lines (`send` is `send.py`, `worker` is
`worker.py`, ...), so that ours and theirs can be run against each other.

    await tutorials.worker(url, queue="task_queue", prefetch=1, dot_seconds=1.0)

Every program takes the broker's URL and its names as arguments, says each line through
`say` (stdout, flushed, unless told otherwise) and raises the brokers' named errors.
A consumer given no `count` runs until it is cancelled. `sdlab brokers` runs them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from sdlab.brokers.rabbit import Exchange, Queue, Rabbit, text
from sdlab.brokers.retry import RetryQueue
from sdlab.brokers.rpc import RpcClient, RpcServer

T = TypeVar("T")
Say = Callable[[str], None]


def print_line(line: str) -> None:
    """One line on stdout, flushed at once (other programs read consumers' output)."""
    print(line, flush=True)


def shown(body: str, most: int = 200) -> str:
    """`body` as a producer says it sent it: whole, or its start and its length when it
    is longer than `most` characters (a file, stdin)."""
    return body if len(body) <= most else f"{body[:60]}... ({len(body):,} characters)"


async def take(messages: AsyncIterator[T], count: int | None, say: Say) -> AsyncIterator[T]:
    """The first `count` messages, or all of them (first saying how to stop) if None."""
    if count is None:
        say(" [*] Waiting for messages. To exit press CTRL+C")
    n = 0
    async for message in messages:
        yield message
        n += 1
        if count is not None and n >= count:
            return


async def send_each(target: Queue | RetryQueue, bodies: list[str], say: Say) -> None:
    """Send the bodies one by one, each confirmed before the next, saying each."""
    for body in bodies:
        await target.send(body)
        say(f" [x] Sent {shown(body)}")


# -- hello ----------------------------------------------------------------------------


async def send(url: str, queue: str, message: str, *, say: Say = print_line) -> None:
    """Hello world's producer: one message, returning once the broker confirmed it."""
    async with await Rabbit.connect(url) as rabbit:
        await Queue(rabbit, queue).send(message)
        say(f" [x] Sent {shown(message)!r}")


async def receive(url: str, queue: str, *, count: int | None = None, say: Say = print_line) -> None:
    """Hello world's consumer: say each message as it arrives."""
    async with await Rabbit.connect(url) as rabbit, Queue(rabbit, queue).consume() as messages:
        async for message in take(messages, count, say):
            say(f" [x] Received {text(message)}")
            await message.ack()


# -- work queues ----------------------------------------------------------------------


async def new_task(url: str, queue: str, tasks: list[str], *, say: Say = print_line) -> None:
    """Queue tasks as persistent messages, each confirmed."""
    async with await Rabbit.connect(url) as rabbit:
        await send_each(Queue(rabbit, queue, persistent=True), tasks, say)


async def worker(
    url: str,
    queue: str,
    *,
    prefetch: int = 1,
    dot_seconds: float = 1.0,
    count: int | None = None,
    say: Say = print_line,
) -> None:
    """Do tasks, `prefetch` at a time: say it, sleep `dot_seconds` per dot, say Done, ack.
    A worker stopped before it acks leaves its task to another (redelivered)."""
    async with (
        await Rabbit.connect(url) as rabbit,
        Queue(rabbit, queue, persistent=True).consume(prefetch=prefetch) as tasks,
    ):
        async for task in take(tasks, count, say):
            body = text(task)
            again = " (redelivered)" if task.redelivered else ""
            say(f" [x] Received {body}{again}")
            await asyncio.sleep(body.count(".") * dot_seconds)
            say(" [x] Done")
            await task.ack()


# -- publish/subscribe, routing, topics -------------------------------------------------


async def emit_log(
    url: str, exchange: str, kind: str, message: str, *, key: str = "", say: Say = print_line
) -> None:
    """Publish one message to a fanout, direct or topic exchange (`kind`) with a routing
    key; say so, and whether nobody was subscribed to get it."""
    async with await Rabbit.connect(url) as rabbit:
        routed = await Exchange(rabbit, exchange, kind).publish(message, key=key)
    sent = f"{key}:{shown(message)}" if key else shown(message)
    say(f" [x] Sent {sent}" + ("" if routed else " (no subscriber: dropped)"))


async def receive_logs(
    url: str,
    exchange: str,
    kind: str,
    keys: list[str],
    *,
    count: int | None = None,
    say: Say = print_line,
) -> None:
    """Subscribe with binding keys (none for a fanout) and say what comes from now on,
    each with its routing key unless the exchange is a fanout."""
    async with (
        await Rabbit.connect(url) as rabbit,
        Exchange(rabbit, exchange, kind).subscribe(*keys) as messages,
    ):
        async for message in take(messages, count, say):
            key = f"{message.routing_key}:" if kind != "fanout" else ""
            say(f" [x] {key}{text(message)}")
            await message.ack()


# -- RPC ------------------------------------------------------------------------------


def fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def fib_text(request: str) -> str:
    """The RPC tutorial's service: "30" -> "832040". ValueError outside 0..10000."""
    n = int(request)
    if not 0 <= n <= 10_000:
        raise ValueError(f"fib({n}): n must be from 0 to 10000")
    return str(fib(n))


async def rpc_client(
    url: str, queue: str, numbers: list[int], *, timeout: float = 5.0, say: Say = print_line
) -> None:
    """Ask the server for fib(n) of each number, all calls at once; RpcTimeout if one
    is not answered in time."""
    async with (
        await Rabbit.connect(url) as rabbit,
        RpcClient(rabbit, queue, timeout=timeout) as client,
    ):
        for n in numbers:
            say(f" [x] Requesting fib({n})")
        answers = await asyncio.gather(*(client.call(str(n)) for n in numbers))
        for answer in answers:
            say(f" [.] Got {answer}")


async def rpc_server(url: str, queue: str, *, prefetch: int = 1, say: Say = print_line) -> None:
    """Answer fib(n) requests until cancelled, saying each."""
    async with await Rabbit.connect(url) as rabbit:

        def answer(request: str) -> str:
            say(f" [.] fib({request})")
            return fib_text(request)

        server = RpcServer(rabbit, answer, queue, prefetch=prefetch)
        await server.declare()  # first: a client that reads the next line may call
        say(" [x] Awaiting RPC requests")
        await server.serve()


# -- publisher confirms ---------------------------------------------------------------


async def publish_confirmed(
    url: str, queue: str, count: int, *, window: int = 100, say: Say = print_line
) -> None:
    """Publish `count` persistent messages, `window` of them awaiting their confirm at
    once; say how fast they were confirmed."""
    loop = asyncio.get_running_loop()
    async with await Rabbit.connect(url) as rabbit:
        target = Queue(rabbit, queue, persistent=True)
        await target.declare()
        slots = asyncio.Semaphore(window)

        async def one(i: int) -> None:
            async with slots:
                await target.send(f"message {i}")

        began = loop.time()
        await asyncio.gather(*(one(i) for i in range(count)))
        took = loop.time() - began
    say(f" [x] {count} confirmed in {took:.2f} s: {count / took:,.0f} messages/s")


async def drain(url: str, queue: str, *, count: int | None = None, say: Say = print_line) -> None:
    """Ack the queue's messages as they come; say how many arrived."""
    received = 0
    async with (
        await Rabbit.connect(url) as rabbit,
        Queue(rabbit, queue, persistent=True).consume(prefetch=100) as messages,
    ):
        async for message in take(messages, count, say):
            await message.ack()
            received += 1
    say(f" [x] Received {received}")


# -- dead lettering -------------------------------------------------------------------


async def queue_jobs(
    url: str, queue: str, delays: list[float], jobs: list[str], *, say: Say = print_line
) -> None:
    """Queue jobs on a RetryQueue (persistent, confirmed)."""
    async with await Rabbit.connect(url) as rabbit:
        await send_each(RetryQueue(rabbit, queue, delays=delays), jobs, say)


async def flaky_worker(
    url: str, queue: str, delays: list[float], *, count: int | None = None, say: Say = print_line
) -> None:
    """Work on a RetryQueue's jobs: those that say `fail` fail every time, those that say
    `flaky` on their first attempt; say each outcome. `count` counts attempts."""
    async with await Rabbit.connect(url) as rabbit:
        jobs = RetryQueue(rabbit, queue, delays=delays)
        async with jobs.consume() as attempts:
            async for job in take(attempts, count, say):
                if "fail" in job.text or ("flaky" in job.text and job.retries == 0):
                    went = await job.fail("the demo worker fails this job")
                    say(f" [x] {job.text}: attempt {job.retries + 1} failed -> {went}")
                else:
                    await job.ack()
                    say(f" [x] {job.text}: attempt {job.retries + 1} done")
