"""`sdlab brokers`: each RabbitMQ tutorial pattern and Kafka, as producer and consumer.

Producers and consumers speak the official tutorials' conventions (queue and exchange
names, flags, UTF-8 text), so `sdlab brokers work produce` feeds the tutorial's
`worker.py` and the tutorial's `new_task.py` feeds `sdlab brokers work consume`.
The programs themselves are `tutorials.py` and `kafka_demo.py`; each command here finds
the broker, parses its options and runs one of them through `_run`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from aiokafka.errors import KafkaError
from aiormq.exceptions import AMQPError

from sdlab import frontend, infra, lab
from sdlab.brokers import kafka, kafka_demo, tutorials
from sdlab.brokers.errors import BrokerError, InvalidUrl
from sdlab.brokers.rpc import RPC_QUEUE
from sdlab.console import console, stderr

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
    frontend.broker_option(
        "RabbitMQ, amqp://user:password@host:port/vhost (default: the one sdlab finds: "
        "SDLAB_RABBITMQ_URL, its private instance, or 127.0.0.1:5672)."
    ),
]
RENAMED = frontend.respelled({"--url": "--broker"})
Count = Annotated[
    int | None,
    typer.Option("--count", "-n", min=1, help="Exit after this many messages (default: Ctrl-C)."),
]


def _rabbit_url(url: str | None) -> str:
    return url or infra.up(["rabbitmq"])["rabbitmq"].url


def _kafka_bootstrap(url: str | None) -> str:
    try:
        return kafka.bootstrap_of(url or infra.up(["kafka"])["kafka"].url)
    except InvalidUrl as exc:
        _fail(exc)


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run a command's program; what a user can meet is one line on stderr, exit 1.
    (The clients' own logs would tell the same failure again, with tracebacks.) Ctrl-C
    is left to `sdlab.cli.main`: exit 130, as for every command."""
    for library in ("aiormq", "aio_pika", "aiokafka"):
        logging.getLogger(library).setLevel(logging.CRITICAL)
    try:
        return asyncio.run(work)
    except (BrokerError, AMQPError, KafkaError, ConnectionError) as exc:
        _fail(exc)


def _fail(exc: Exception) -> NoReturn:
    if frontend.unreachable(exc) is None:
        stderr.print(f"[red]error:[/] {type(exc).__name__}: {exc}", highlight=False)
        raise typer.Exit(1) from None
    frontend.fail(exc, system="brokers")


BODIES = " `-` reads it from stdin, `@FILE` from a file (`@@...` is a literal `@...`)."


def _bodies(args: list[str]) -> list[str]:
    """Message bodies as given: `-` is stdin (once), `@FILE` the file's text, `@@x` is
    `@x`, anything else itself. (Arguments alone cap a body at about 128 KiB, the
    kernel's limit on one argument.)"""
    if args.count("-") > 1:
        raise typer.BadParameter("stdin (`-`) can be read once only")
    return [_body(arg) for arg in args]


def _body(arg: str) -> str:
    try:
        if arg == "-":
            return sys.stdin.buffer.read().decode()
        if arg.startswith("@@"):
            return arg[1:]
        if arg.startswith("@"):
            return Path(arg[1:]).read_bytes().decode()
    except OSError as exc:
        raise typer.BadParameter(f"{arg}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise typer.BadParameter(f"{arg}: not UTF-8 text (bodies are text)") from None
    return arg


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


@hello.command("produce", cls=RENAMED)
def hello_produce(
    message: Annotated[str, typer.Argument(help="The text to send;" + BODIES)] = "Hello World!",
    queue: Annotated[str, typer.Option(help="Queue name.")] = "hello",
    url: Url = None,
) -> None:
    """Send one message to the queue; returns once the broker confirmed it.

    Examples:

      sdlab brokers hello produce

      sdlab brokers hello produce 'Hola!' --queue greetings
    """
    (body,) = _bodies([message])
    _run(tutorials.send(_rabbit_url(url), queue, body))


@hello.command("consume", cls=RENAMED)
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
    _run(tutorials.receive(_rabbit_url(url), queue, count=count))


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


@work.command("produce", cls=RENAMED)
def work_produce(
    tasks: Annotated[
        list[str] | None, typer.Argument(help="Tasks, one message each;" + BODIES)
    ] = None,
    queue: Annotated[str, typer.Option(help="Queue name.")] = "task_queue",
    url: Url = None,
) -> None:
    """Queue tasks as persistent messages, each confirmed by the broker.

    Examples:

      sdlab brokers work produce 'A task.....'

      sdlab brokers work produce one. two.. three...
    """
    _run(tutorials.new_task(_rabbit_url(url), queue, _bodies(tasks or ["Hello World!"])))


@work.command("consume", cls=RENAMED)
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
    _run(
        tutorials.worker(
            _rabbit_url(url), queue, prefetch=prefetch, dot_seconds=dot_seconds, count=count
        )
    )


# -- publish/subscribe, routing, topics -------------------------------------------------

pubsub = _pattern(
    "pubsub",
    "Publish/subscribe: the fanout exchange `logs`; each subscriber binds a queue of its "
    "own (server-named, exclusive) and gets every message. Nobody subscribed: the "
    "message is dropped.\n\nExamples:\n\n  sdlab brokers pubsub consume\n\n"
    "  sdlab brokers pubsub produce 'info: Hello World!'",
)


@pubsub.command("produce", cls=RENAMED)
def pubsub_produce(
    message: Annotated[
        str, typer.Argument(help="The text to send;" + BODIES)
    ] = "info: Hello World!",
    exchange: Annotated[str, typer.Option(help="Fanout exchange.")] = "logs",
    url: Url = None,
) -> None:
    """Publish one message to every subscriber.

    Examples:

      sdlab brokers pubsub produce 'warning: disk 91% full'
    """
    (body,) = _bodies([message])
    _run(tutorials.emit_log(_rabbit_url(url), exchange, "fanout", body))


@pubsub.command("consume", cls=RENAMED)
def pubsub_consume(
    exchange: Annotated[str, typer.Option(help="Fanout exchange.")] = "logs",
    count: Count = None,
    url: Url = None,
) -> None:
    """Subscribe and print every message published from now on.

    Examples:

      sdlab brokers pubsub consume > logs_from_rabbit.log
    """
    _run(tutorials.receive_logs(_rabbit_url(url), exchange, "fanout", [], count=count))


routing = _pattern(
    "routing",
    "Routing: the direct exchange `direct_logs`; a subscriber gets the messages whose "
    "routing key (here a severity) is one of its binding keys.\n\nExamples:\n\n"
    "  sdlab brokers routing consume warning error\n\n"
    "  sdlab brokers routing produce error 'Run. Run. Or it will explode.'",
)


@routing.command("produce", cls=RENAMED)
def routing_produce(
    severity: Annotated[str, typer.Argument(help="The routing key.")] = "info",
    message: Annotated[str, typer.Argument(help="The text to send;" + BODIES)] = "Hello World!",
    exchange: Annotated[str, typer.Option(help="Direct exchange.")] = "direct_logs",
    url: Url = None,
) -> None:
    """Publish one message with a severity as its routing key.

    Examples:

      sdlab brokers routing produce error 'disk failed'
    """
    (body,) = _bodies([message])
    _run(tutorials.emit_log(_rabbit_url(url), exchange, "direct", body, key=severity))


@routing.command("consume", cls=RENAMED)
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
    _run(tutorials.receive_logs(_rabbit_url(url), exchange, "direct", severities, count=count))


topics = _pattern(
    "topics",
    "Topics: the topic exchange `topic_logs`; routing keys are words between dots "
    "(`<facility>.<severity>`), and in a binding key `*` stands for one word, `#` for "
    "zero or more.\n\nExamples:\n\n  sdlab brokers topics consume 'kern.*' '*.critical'\n\n"
    "  sdlab brokers topics produce kern.critical 'A critical kernel error'",
)


@topics.command("produce", cls=RENAMED)
def topics_produce(
    routing_key: Annotated[str, typer.Argument(help="Words between dots.")] = "anonymous.info",
    message: Annotated[str, typer.Argument(help="The text to send;" + BODIES)] = "Hello World!",
    exchange: Annotated[str, typer.Option(help="Topic exchange.")] = "topic_logs",
    url: Url = None,
) -> None:
    """Publish one message with a routing key.

    Examples:

      sdlab brokers topics produce kern.critical 'A critical kernel error'
    """
    (body,) = _bodies([message])
    _run(tutorials.emit_log(_rabbit_url(url), exchange, "topic", body, key=routing_key))


@topics.command("consume", cls=RENAMED)
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
    _run(tutorials.receive_logs(_rabbit_url(url), exchange, "topic", binding_keys, count=count))


# -- RPC ------------------------------------------------------------------------------

rpc = _pattern(
    "rpc",
    "RPC: a client sends a request to `rpc_queue` with `reply_to` (its own exclusive "
    "queue) and a `correlation_id`; the server answers there. The tutorial's service: "
    "Fibonacci numbers. `produce` is the client, `consume` the server.\n\nExamples:\n\n"
    "  sdlab brokers rpc consume\n\n  sdlab brokers rpc produce 30",
)


@rpc.command("produce", cls=RENAMED)
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
    _run(tutorials.rpc_client(_rabbit_url(url), queue, numbers or [30], timeout=timeout))


@rpc.command("consume", cls=RENAMED)
def rpc_consume(
    queue: Annotated[str, typer.Option(help="Queue to serve.")] = RPC_QUEUE,
    prefetch: Annotated[int, typer.Option(min=1, help="Requests handled at once.")] = 1,
    url: Url = None,
) -> None:
    """Answer fib(n) requests until Ctrl-C.

    Examples:

      sdlab brokers rpc consume
    """
    _run(tutorials.rpc_server(_rabbit_url(url), queue, prefetch=prefetch))


# -- publisher confirms ---------------------------------------------------------------

confirms = _pattern(
    "confirms",
    "Publisher confirms: every publish in sdlab.brokers returns only when the broker has "
    "the message (on disk, for a durable queue). `produce` sends many with a window of "
    "unconfirmed ones and says how fast; `consume` drains them.\n\nExamples:\n\n"
    "  sdlab brokers confirms produce -n 10000 --window 100\n\n"
    "  sdlab brokers confirms consume -n 10000",
)


@confirms.command("produce", cls=RENAMED)
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
    _run(tutorials.publish_confirmed(_rabbit_url(url), queue, count, window=window))


@confirms.command("consume", cls=RENAMED)
def confirms_consume(
    queue: Annotated[str, typer.Option(help="Queue name.")] = "confirms",
    count: Count = None,
    url: Url = None,
) -> None:
    """Drain the queue, acking each message; print how many arrived.

    Examples:

      sdlab brokers confirms consume -n 1000
    """
    _run(tutorials.drain(_rabbit_url(url), queue, count=count))


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


@deadletter.command("produce", cls=RENAMED)
def deadletter_produce(
    jobs: Annotated[
        list[str] | None, typer.Argument(help="Jobs, one message each;" + BODIES)
    ] = None,
    queue: Annotated[str, typer.Option(help="Work queue name.")] = "jobs",
    delay: Delays = None,
    url: Url = None,
) -> None:
    """Queue jobs (persistent, confirmed).

    Examples:

      sdlab brokers deadletter produce 'flaky job' 'fail job'
    """
    bodies = _bodies(jobs or ["a job"])
    _run(tutorials.queue_jobs(_rabbit_url(url), queue, delay or [1.0, 5.0], bodies))


@deadletter.command("consume", cls=RENAMED)
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
    _run(tutorials.flaky_worker(_rabbit_url(url), queue, delay or [1.0, 5.0], count=count))


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
    str | None, frontend.broker_option("Kafka, kafka://host:port (default: sdlab's).")
]
Topic = Annotated[str, typer.Option(help="Topic name.")]


@kafka_app.command("produce", cls=RENAMED)
def kafka_produce(
    values: Annotated[list[str] | None, typer.Argument(help="Records, one each;" + BODIES)] = None,
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
    _run(
        kafka_demo.produce(
            _kafka_bootstrap(url),
            topic,
            _bodies(values or ["Hello World!"]),
            key=key,
            partitions=partitions,
        )
    )


@kafka_app.command("consume", cls=RENAMED)
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
    _run(
        kafka_demo.consume(
            _kafka_bootstrap(url), topic, group, session_timeout=session_timeout, count=count
        )
    )


@kafka_app.command("lag", cls=RENAMED)
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
    tutorials.print_line(f"total lag: {sum(row.lag for row in rows)}")


@kafka_app.command("replay", cls=RENAMED)
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
    _run(kafka_demo.replay(_kafka_bootstrap(url), topic, offset=offset, partitions=partition))


# -- benchmark ------------------------------------------------------------------------


@app.command()
def experiment(
    quick: lab.Quick = False,
    out: lab.ReportDir = None,
) -> None:
    """Messages per second, publish -> consume with confirms and acks: sdlab.brokers
    beside a bare aio-pika loop (RabbitMQ) and a bare aiokafka loop (Kafka).

    Examples:

      sdlab brokers experiment --quick

      sdlab brokers experiment --out /tmp/brokers-report
    """
    from sdlab.brokers.experiment import BrokerThroughput

    chosen = BrokerThroughput.quick() if quick else BrokerThroughput()
    lab.run_as_command([chosen], quick=quick, out=out)


lab.renamed(app, "bench", experiment, system="brokers")
