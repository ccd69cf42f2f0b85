"""`sdlab brokers`: each RabbitMQ tutorial pattern and Kafka, as producer and consumer.

Producers and consumers speak the official tutorials' conventions (queue and exchange
names, flags, UTF-8 text), so `sdlab brokers work produce` feeds the tutorial's
`worker.py` and the tutorial's `new_task.py` feeds `sdlab brokers work consume`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Annotated, Any, TypeVar

import typer
from aiokafka.errors import KafkaError
from aiormq.exceptions import AMQPError

from sdlab import infra, lab
from sdlab.brokers import kafka
from sdlab.brokers.errors import BrokerError
from sdlab.brokers.rabbit import Exchange, Queue, Rabbit, text
from sdlab.brokers.retry import RetryQueue
from sdlab.brokers.rpc import RPC_QUEUE, RpcClient, RpcServer
from sdlab.console import console, stderr
from sdlab.infra.services.kafka import bootstrap_servers

app = typer.Typer(
    help="Message brokers (sdlab.brokers): every RabbitMQ tutorial pattern (hello, work "
    "queues, publish/subscribe, routing, topics, RPC), publisher confirms, dead lettering "
    "with retries, and Kafka (partitions, consumer groups, replay, lag).\n\n"
    "Each pattern has `produce` and `consume`; run a consumer in one terminal and a "
    "producer in another. The library is `from sdlab.brokers import Rabbit, Queue, "
    "Exchange, RpcClient, RetryQueue, GroupConsumer, connect`; see docs/brokers.md.",
    no_args_is_help=True,
)

T = TypeVar("T")

Url = Annotated[
    str | None,
    typer.Option(
        help="RabbitMQ URL, amqp://user:password@host:port/vhost (default: the one sdlab "
        "finds: SDLAB_RABBITMQ_URL, its private instance, or 127.0.0.1:5672)."
    ),
]
Count = Annotated[
    int | None,
    typer.Option("--count", "-n", min=1, help="Exit after this many messages (default: Ctrl-C)."),
]


def _rabbit_url(url: str | None) -> str:
    return url or infra.up(["rabbitmq"])["rabbitmq"].url


def _kafka_bootstrap(url: str | None) -> str:
    return bootstrap_servers(url or infra.up(["kafka"])["kafka"].url)


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; what a user can meet is one line on stderr, exit 1.
    (The clients' own logs would tell the same failure again, with tracebacks.)"""
    for library in ("aiormq", "aio_pika", "aiokafka"):
        logging.getLogger(library).setLevel(logging.CRITICAL)
    try:
        return asyncio.run(work)
    except (BrokerError, AMQPError, KafkaError, ConnectionError) as exc:
        stderr.print(f"[red]error:[/] {type(exc).__name__}: {exc}", highlight=False)
        raise typer.Exit(1) from None


def say(line: str) -> None:
    """One line on stdout, flushed at once (other programs read consumers' output)."""
    print(line, flush=True)


async def _take(messages: AsyncIterator[T], count: int | None) -> AsyncIterator[T]:
    if count is None:
        say(" [*] Waiting for messages. To exit press CTRL+C")
    n = 0
    async for message in messages:
        yield message
        n += 1
        if count is not None and n >= count:
            return


def _pattern(name: str, summary: str) -> typer.Typer:
    group = typer.Typer(help=summary, no_args_is_help=True)
    app.add_typer(group, name=name)
    return group


# -- hello ----------------------------------------------------------------------------

hello = _pattern(
    "hello",
    "Hello world: one producer, one consumer, the queue `hello` (a durable quorum queue, "
    "as in the tutorial).\n\nExamples:\n\n  sdlab brokers hello consume\n\n"
    "  sdlab brokers hello produce 'Hello World!'",
)


@hello.command("produce")
def hello_produce(
    message: Annotated[str, typer.Argument(help="The text to send.")] = "Hello World!",
    queue: Annotated[str, typer.Option(help="Queue name.")] = "hello",
    url: Url = None,
) -> None:
    """Send one message to the queue; returns once the broker confirmed it.

    Examples:

      sdlab brokers hello produce

      sdlab brokers hello produce 'Hola!' --queue greetings
    """

    address = _rabbit_url(url)

    async def run() -> None:
        async with await Rabbit.connect(address) as rabbit:
            await Queue(rabbit, queue).send(message)
            say(f" [x] Sent {message!r}")

    _run(run())


@hello.command("consume")
def hello_consume(
    queue: Annotated[str, typer.Option(help="Queue name.")] = "hello",
    count: Count = None,
    url: Url = None,
) -> None:
    """Print each message of the queue as it arrives.

    Examples:

      sdlab brokers hello consume

      sdlab brokers hello consume -n 1
    """

    address = _rabbit_url(url)

    async def run() -> None:
        async with (
            await Rabbit.connect(address) as rabbit,
            Queue(rabbit, queue).consume() as messages,
        ):
            async for message in _take(messages, count):
                say(f" [x] Received {text(message)}")
                await message.ack()

    _run(run())


# -- work queues ----------------------------------------------------------------------

work = _pattern(
    "work",
    "Work queues: tasks on `task_queue` (durable, persistent messages) shared by "
    "competing workers; each worker acks a task when done and takes one at a time "
    "(prefetch 1), so a busy worker is given nothing more: fair dispatch. As in the "
    "tutorial, each dot in a task is a second of work.\n\nExamples:\n\n"
    "  sdlab brokers work consume      (in two terminals)\n\n"
    "  sdlab brokers work produce 'First task.' 'Second task..' 'Third task...'",
)


@work.command("produce")
def work_produce(
    tasks: Annotated[list[str] | None, typer.Argument(help="Tasks, one message each.")] = None,
    queue: Annotated[str, typer.Option(help="Queue name.")] = "task_queue",
    url: Url = None,
) -> None:
    """Queue tasks as persistent messages, each confirmed by the broker.

    Examples:

      sdlab brokers work produce 'A task.....'

      sdlab brokers work produce one. two.. three...
    """

    address = _rabbit_url(url)

    async def run() -> None:
        async with await Rabbit.connect(address) as rabbit:
            task_queue = Queue(rabbit, queue, persistent=True)
            for task in tasks or ["Hello World!"]:
                await task_queue.send(task)
                say(f" [x] Sent {task}")

    _run(run())


@work.command("consume")
def work_consume(
    queue: Annotated[str, typer.Option(help="Queue name.")] = "task_queue",
    prefetch: Annotated[int, typer.Option(min=1, help="Unacked tasks held at once.")] = 1,
    dot_seconds: Annotated[
        float, typer.Option(min=0, help="Seconds of work per dot in a task.")
    ] = 1.0,
    count: Count = None,
    url: Url = None,
) -> None:
    """Do tasks: print, sleep a while per dot, print Done, ack.

    A worker stopped before it acks leaves its task to another worker (redelivered).

    Examples:

      sdlab brokers work consume

      sdlab brokers work consume --dot-seconds 0.1 -n 10
    """

    address = _rabbit_url(url)

    async def run() -> None:
        async with (
            await Rabbit.connect(address) as rabbit,
            Queue(rabbit, queue, persistent=True).consume(prefetch=prefetch) as tasks,
        ):
            async for task in _take(tasks, count):
                body = text(task)
                again = " (redelivered)" if task.redelivered else ""
                say(f" [x] Received {body}{again}")
                await asyncio.sleep(body.count(".") * dot_seconds)
                say(" [x] Done")
                await task.ack()

    _run(run())


# -- publish/subscribe, routing, topics -------------------------------------------------

pubsub = _pattern(
    "pubsub",
    "Publish/subscribe: the fanout exchange `logs`; each subscriber binds a queue of its "
    "own (server-named, exclusive) and gets every message. Nobody subscribed: the "
    "message is dropped.\n\nExamples:\n\n  sdlab brokers pubsub consume\n\n"
    "  sdlab brokers pubsub produce 'info: Hello World!'",
)


@pubsub.command("produce")
def pubsub_produce(
    message: Annotated[str, typer.Argument(help="The text to send.")] = "info: Hello World!",
    exchange: Annotated[str, typer.Option(help="Fanout exchange.")] = "logs",
    url: Url = None,
) -> None:
    """Publish one message to every subscriber.

    Examples:

      sdlab brokers pubsub produce 'warning: disk 91% full'
    """
    _publish(url, exchange, "fanout", "", message)


@pubsub.command("consume")
def pubsub_consume(
    exchange: Annotated[str, typer.Option(help="Fanout exchange.")] = "logs",
    count: Count = None,
    url: Url = None,
) -> None:
    """Subscribe and print every message published from now on.

    Examples:

      sdlab brokers pubsub consume > logs_from_rabbit.log
    """
    _subscribe(url, exchange, "fanout", [], count)


routing = _pattern(
    "routing",
    "Routing: the direct exchange `direct_logs`; a subscriber gets the messages whose "
    "routing key (here a severity) is one of its binding keys.\n\nExamples:\n\n"
    "  sdlab brokers routing consume warning error\n\n"
    "  sdlab brokers routing produce error 'Run. Run. Or it will explode.'",
)


@routing.command("produce")
def routing_produce(
    severity: Annotated[str, typer.Argument(help="The routing key.")] = "info",
    message: Annotated[str, typer.Argument(help="The text to send.")] = "Hello World!",
    exchange: Annotated[str, typer.Option(help="Direct exchange.")] = "direct_logs",
    url: Url = None,
) -> None:
    """Publish one message with a severity as its routing key.

    Examples:

      sdlab brokers routing produce error 'disk failed'
    """
    _publish(url, exchange, "direct", severity, message)


@routing.command("consume")
def routing_consume(
    severities: Annotated[list[str], typer.Argument(help="Binding keys: severities wanted.")],
    exchange: Annotated[str, typer.Option(help="Direct exchange.")] = "direct_logs",
    count: Count = None,
    url: Url = None,
) -> None:
    """Subscribe to some severities and print what comes.

    Examples:

      sdlab brokers routing consume info warning error
    """
    _subscribe(url, exchange, "direct", severities, count)


topics = _pattern(
    "topics",
    "Topics: the topic exchange `topic_logs`; routing keys are words between dots "
    "(`<facility>.<severity>`), and in a binding key `*` stands for one word, `#` for "
    "zero or more.\n\nExamples:\n\n  sdlab brokers topics consume 'kern.*' '*.critical'\n\n"
    "  sdlab brokers topics produce kern.critical 'A critical kernel error'",
)


@topics.command("produce")
def topics_produce(
    routing_key: Annotated[str, typer.Argument(help="Words between dots.")] = "anonymous.info",
    message: Annotated[str, typer.Argument(help="The text to send.")] = "Hello World!",
    exchange: Annotated[str, typer.Option(help="Topic exchange.")] = "topic_logs",
    url: Url = None,
) -> None:
    """Publish one message with a routing key.

    Examples:

      sdlab brokers topics produce kern.critical 'A critical kernel error'
    """
    _publish(url, exchange, "topic", routing_key, message)


@topics.command("consume")
def topics_consume(
    binding_keys: Annotated[list[str], typer.Argument(help="Patterns: `*` one word, `#` any.")],
    exchange: Annotated[str, typer.Option(help="Topic exchange.")] = "topic_logs",
    count: Count = None,
    url: Url = None,
) -> None:
    """Subscribe with binding keys and print what matches.

    Examples:

      sdlab brokers topics consume '#'

      sdlab brokers topics consume 'kern.*' '*.critical'
    """
    _subscribe(url, exchange, "topic", binding_keys, count)


def _publish(url: str | None, exchange: str, kind: str, key: str, message: str) -> None:
    address = _rabbit_url(url)

    async def run() -> None:
        async with await Rabbit.connect(address) as rabbit:
            routed = await Exchange(rabbit, exchange, kind).publish(message, key=key)
        shown = f"{key}:{message}" if key else message
        say(f" [x] Sent {shown}" + ("" if routed else " (no subscriber: dropped)"))

    _run(run())


def _subscribe(
    url: str | None, exchange: str, kind: str, keys: list[str], count: int | None
) -> None:
    address = _rabbit_url(url)

    async def run() -> None:
        async with (
            await Rabbit.connect(address) as rabbit,
            Exchange(rabbit, exchange, kind).subscribe(*keys) as messages,
        ):
            async for message in _take(messages, count):
                key = f"{message.routing_key}:" if kind != "fanout" else ""
                say(f" [x] {key}{text(message)}")
                await message.ack()

    _run(run())


# -- RPC ------------------------------------------------------------------------------

rpc = _pattern(
    "rpc",
    "RPC: a client sends a request to `rpc_queue` with `reply_to` (its own exclusive "
    "queue) and a `correlation_id`; the server answers there. The tutorial's service: "
    "Fibonacci numbers. `produce` is the client, `consume` the server.\n\nExamples:\n\n"
    "  sdlab brokers rpc consume\n\n  sdlab brokers rpc produce 30",
)


def fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def fib_text(request: str) -> str:
    n = int(request)
    if not 0 <= n <= 10_000:
        raise ValueError(f"fib({n}): n must be from 0 to 10000")
    return str(fib(n))


@rpc.command("produce")
def rpc_produce(
    numbers: Annotated[list[int] | None, typer.Argument(help="n for each fib(n) call.")] = None,
    queue: Annotated[str, typer.Option(help="The server's queue.")] = RPC_QUEUE,
    timeout: Annotated[float, typer.Option(min=0.01, help="Seconds to wait per call.")] = 5.0,
    url: Url = None,
) -> None:
    """Ask the server for fib(n), all calls at once; exit 1 if one times out.

    Examples:

      sdlab brokers rpc produce 30

      sdlab brokers rpc produce 1 2 3 10 --timeout 2
    """

    address = _rabbit_url(url)

    async def run() -> None:
        wanted = numbers or [30]
        async with (
            await Rabbit.connect(address) as rabbit,
            RpcClient(rabbit, queue, timeout=timeout) as client,
        ):
            for n in wanted:
                say(f" [x] Requesting fib({n})")
            answers = await asyncio.gather(*(client.call(str(n)) for n in wanted))
            for answer in answers:
                say(f" [.] Got {answer}")

    _run(run())


@rpc.command("consume")
def rpc_consume(
    queue: Annotated[str, typer.Option(help="Queue to serve.")] = RPC_QUEUE,
    prefetch: Annotated[int, typer.Option(min=1, help="Requests handled at once.")] = 1,
    url: Url = None,
) -> None:
    """Answer fib(n) requests until Ctrl-C.

    Examples:

      sdlab brokers rpc consume
    """

    address = _rabbit_url(url)

    async def run() -> None:
        async with await Rabbit.connect(address) as rabbit:

            def answer(request: str) -> str:
                say(f" [.] fib({request})")
                return fib_text(request)

            server = RpcServer(rabbit, answer, queue, prefetch=prefetch)
            await server.declare()  # first: a client that reads the next line may call
            say(" [x] Awaiting RPC requests")
            await server.serve()

    _run(run())


# -- publisher confirms ---------------------------------------------------------------

confirms = _pattern(
    "confirms",
    "Publisher confirms: every publish in sdlab.brokers returns only when the broker has "
    "the message (on disk, for a durable queue). `produce` sends many with a window of "
    "unconfirmed ones and says how fast; `consume` drains them.\n\nExamples:\n\n"
    "  sdlab brokers confirms produce -n 10000 --window 100\n\n"
    "  sdlab brokers confirms consume -n 10000",
)


@confirms.command("produce")
def confirms_produce(
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="Messages.")] = 1000,
    window: Annotated[
        int, typer.Option(min=1, help="Publishes awaiting their confirm at once.")
    ] = 100,
    queue: Annotated[str, typer.Option(help="Queue name.")] = "confirms",
    url: Url = None,
) -> None:
    """Publish persistent messages, each confirmed; print the rate.

    Examples:

      sdlab brokers confirms produce -n 10000

      sdlab brokers confirms produce -n 1000 --window 1     (one at a time)
    """

    address = _rabbit_url(url)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        async with await Rabbit.connect(address) as rabbit:
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

    _run(run())


@confirms.command("consume")
def confirms_consume(
    queue: Annotated[str, typer.Option(help="Queue name.")] = "confirms",
    count: Count = None,
    url: Url = None,
) -> None:
    """Drain the queue, acking each message; print how many arrived.

    Examples:

      sdlab brokers confirms consume -n 1000
    """

    address = _rabbit_url(url)

    async def run() -> None:
        received = 0
        async with (
            await Rabbit.connect(address) as rabbit,
            Queue(rabbit, queue, persistent=True).consume(prefetch=100) as messages,
        ):
            async for message in _take(messages, count):
                await message.ack()
                received += 1
        say(f" [x] Received {received}")

    _run(run())


# -- dead lettering -------------------------------------------------------------------

deadletter = _pattern(
    "deadletter",
    "Dead lettering: a job that fails is retried after growing delays (waiting in "
    "`<queue>.retry.K`, whose message TTL dead-letters it back), then parked in "
    "`<queue>.dead`. The demo worker fails jobs that say `fail` every time, and jobs "
    "that say `flaky` on their first attempt.\n\nExamples:\n\n"
    "  sdlab brokers deadletter consume\n\n"
    "  sdlab brokers deadletter produce 'resize 1' 'flaky resize 2' 'fail resize 3'",
)

Delays = Annotated[
    list[float] | None,
    typer.Option("--delay", help="Retry delays in seconds, repeatable (default: 1 5)."),
]


@deadletter.command("produce")
def deadletter_produce(
    jobs: Annotated[list[str] | None, typer.Argument(help="Jobs, one message each.")] = None,
    queue: Annotated[str, typer.Option(help="Work queue name.")] = "jobs",
    delay: Delays = None,
    url: Url = None,
) -> None:
    """Queue jobs (persistent, confirmed).

    Examples:

      sdlab brokers deadletter produce 'flaky job' 'fail job'
    """

    address = _rabbit_url(url)

    async def run() -> None:
        async with await Rabbit.connect(address) as rabbit:
            target = RetryQueue(rabbit, queue, delays=delay or [1.0, 5.0])
            for job in jobs or ["a job"]:
                await target.send(job)
                say(f" [x] Sent {job}")

    _run(run())


@deadletter.command("consume")
def deadletter_consume(
    queue: Annotated[str, typer.Option(help="Work queue name.")] = "jobs",
    delay: Delays = None,
    count: Count = None,
    url: Url = None,
) -> None:
    """Work on jobs: `fail` jobs always fail, `flaky` ones fail once; print each outcome.
    --count counts attempts, not jobs.

    Examples:

      sdlab brokers deadletter consume

      sdlab brokers deadletter consume --delay 0.5 --delay 2 -n 5
    """

    address = _rabbit_url(url)

    async def run() -> None:
        async with await Rabbit.connect(address) as rabbit:
            jobs = RetryQueue(rabbit, queue, delays=delay or [1.0, 5.0])
            async with jobs.consume() as attempts:
                async for job in _take(attempts, count):
                    failing = "fail" in job.text or ("flaky" in job.text and job.retries == 0)
                    if failing:
                        went = await job.fail("the demo worker fails this job")
                        say(f" [x] {job.text}: attempt {job.retries + 1} failed -> {went}")
                    else:
                        await job.ack()
                        say(f" [x] {job.text}: attempt {job.retries + 1} done")

    _run(run())


# -- Kafka ----------------------------------------------------------------------------

kafka_app = _pattern(
    "kafka",
    "Kafka (any Kafka-protocol broker; sdlab starts tansu): topics with partitions, "
    "keyed production (same key, same partition, order kept), consumer groups that "
    "commit after processing, replay and lag.\n\nExamples:\n\n"
    "  sdlab brokers kafka produce --topic orders --partitions 3 --key alice paid shipped\n\n"
    "  sdlab brokers kafka consume --topic orders --group billing -n 2\n\n"
    "  sdlab brokers kafka lag --topic orders --group billing",
)
KafkaUrl = Annotated[
    str | None, typer.Option("--url", help="Kafka URL, kafka://host:port (default: sdlab's).")
]
Topic = Annotated[str, typer.Option(help="Topic name.")]


@kafka_app.command("produce")
def kafka_produce(
    values: Annotated[list[str] | None, typer.Argument(help="Records, one each.")] = None,
    topic: Topic = "events",
    key: Annotated[str | None, typer.Option(help="Key of every record (its partition).")] = None,
    partitions: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Partitions the topic must have: a new topic is created with them "
            "(default 1), an existing one with another count is an error.",
        ),
    ] = None,
    url: KafkaUrl = None,
) -> None:
    """Send records, each acknowledged by the broker; print where each went.

    Examples:

      sdlab brokers kafka produce --topic orders --key alice paid shipped delivered
    """

    bootstrap = _kafka_bootstrap(url)

    async def run() -> None:
        await kafka.create_topic(bootstrap, topic, partitions=partitions)
        async with kafka.Producer(bootstrap) as producer:
            for value in values or ["Hello World!"]:
                partition, offset = await producer.send(topic, value, key=key)
                say(f" [x] Sent {value} -> partition {partition}, offset {offset}")

    _run(run())


@kafka_app.command("consume")
def kafka_consume(
    topic: Topic = "events",
    group: Annotated[str, typer.Option(help="Consumer group.")] = "sdlab",
    session_timeout: Annotated[
        float,
        typer.Option(min=1, help="Seconds before a silent member's work is given away."),
    ] = 10.0,
    count: Count = None,
    url: KafkaUrl = None,
) -> None:
    """Read as a member of a group; each record is committed after it is printed.

    Examples:

      sdlab brokers kafka consume --topic orders --group billing

      sdlab brokers kafka consume --topic orders --group audit -n 10
    """

    bootstrap = _kafka_bootstrap(url)

    async def run() -> None:
        await kafka.create_topic(bootstrap, topic)  # 1 partition if it is new
        consumer = kafka.GroupConsumer(bootstrap, topic, group, session_timeout=session_timeout)
        async with consumer:
            async for record in _take(aiter(consumer), count):
                key = "" if record.key is None else f", key {record.key.decode()}"
                where = f"partition {record.partition}, offset {record.offset}{key}"
                say(f" [x] {record.text} ({where})")
                consumer.ack(record)

    _run(run())


@kafka_app.command("lag")
def kafka_lag(
    topic: Topic = "events",
    group: Annotated[str, typer.Option(help="Consumer group.")] = "sdlab",
    url: KafkaUrl = None,
) -> None:
    """Per partition: the group's committed offset, the end, and the lag between.

    Examples:

      sdlab brokers kafka lag --topic orders --group billing
    """
    from sdlab.bench.report import rich_table

    rows = _run(kafka.group_lag(_kafka_bootstrap(url), topic, group))
    console.print(rich_table([row.__dict__ for row in rows]))
    say(f"total lag: {sum(row.lag for row in rows)}")


@kafka_app.command("replay")
def kafka_replay(
    topic: Topic = "events",
    offset: Annotated[int, typer.Option(min=0, help="First offset (0: the beginning).")] = 0,
    partition: Annotated[
        list[int] | None, typer.Option(help="Partition to replay, repeatable (default: all).")
    ] = None,
    url: KafkaUrl = None,
) -> None:
    """Print the records from an offset to the end as it is now, outside any group.

    Examples:

      sdlab brokers kafka replay --topic orders

      sdlab brokers kafka replay --topic orders --partition 1 --offset 5
    """

    bootstrap = _kafka_bootstrap(url)

    async def run() -> None:
        async for record in kafka.replay(bootstrap, topic, offset=offset, partitions=partition):
            say(f" [x] {record.text} (partition {record.partition}, offset {record.offset})")

    _run(run())


# -- benchmark ------------------------------------------------------------------------


@app.command()
def bench(
    quick: lab.Quick = False,
    out: lab.ReportDir = None,
) -> None:
    """Messages per second, publish -> consume with confirms and acks: sdlab.brokers
    beside a bare aio-pika loop (RabbitMQ) and a bare aiokafka loop (Kafka).

    Examples:

      sdlab brokers bench --quick

      sdlab brokers bench --out /tmp/brokers-report
    """
    from sdlab.brokers.experiment import BrokerThroughput

    chosen = BrokerThroughput.quick() if quick else BrokerThroughput()
    lab.run_as_command([chosen], quick=quick, out=out)
