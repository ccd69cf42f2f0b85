"""`sdlab brokers` as a user runs it: each pattern's produce and consume (a consumer
that must be listening first runs in a process of its own), and failures as one line
on stderr."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from sdlab.brokers import Queue, Rabbit, create_topic, replay, text
from tests.brokers.conftest import Made, proxied
from tests.brokers.programs import Program
from tests.helpers import sdlab


def test_hello_produce_then_consume(rabbitmq_url: str, namespace: str, made: Made) -> None:
    queue = made.queue(f"{namespace}.hello")
    sent = sdlab(
        "brokers", "hello", "produce", "Hello CLI", "--queue", queue, "--broker", rabbitmq_url
    )
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout == " [x] Sent 'Hello CLI'\n"
    got = sdlab(
        "brokers", "hello", "consume", "-n", "1", "--queue", queue, "--broker", rabbitmq_url
    )
    assert got.returncode == 0, got.stderr
    assert got.stdout == " [x] Received Hello CLI\n"


def test_work_produce_then_consume(rabbitmq_url: str, namespace: str, made: Made) -> None:
    queue = made.queue(f"{namespace}.task_queue")
    common = ["--queue", queue, "--broker", rabbitmq_url]
    sent = sdlab("brokers", "work", "produce", "one.", "two..", *common)
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.splitlines() == [" [x] Sent one.", " [x] Sent two.."]
    done = sdlab("brokers", "work", "consume", "--dot-seconds", "0", "-n", "2", *common)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        " [x] Received one.",
        " [x] Done",
        " [x] Received two..",
        " [x] Done",
    ]


async def test_pubsub_consumers_get_what_is_published_while_they_listen(
    rabbitmq_url: str, namespace: str, made: Made
) -> None:
    common = ["--exchange", made.exchange(f"{namespace}-logs"), "--broker", rabbitmq_url]
    early = sdlab("brokers", "pubsub", "produce", "info: early", *common)
    assert early.stdout == " [x] Sent info: early (no subscriber: dropped)\n", early.stderr
    async with listening("pubsub", "consume", *common, copies=2) as (first, second):
        sent = sdlab("brokers", "pubsub", "produce", "info: Hello World!", *common)
        assert sent.stdout == " [x] Sent info: Hello World!\n", sent.stderr
        for subscriber in (first, second):
            await subscriber.expect(" [x] ")
    for subscriber in (first, second):
        assert subscriber.lines[1:] == [" [x] info: Hello World!"]  # not the early one


async def test_routing_delivers_the_severities_subscribed_to(
    rabbitmq_url: str, namespace: str, made: Made
) -> None:
    common = ["--exchange", made.exchange(f"{namespace}-direct_logs"), "--broker", rabbitmq_url]
    async with listening("routing", "consume", "warning", "error", *common) as (subscriber,):
        info = sdlab("brokers", "routing", "produce", "info", "an info line", *common)
        assert info.stdout == " [x] Sent info:an info line (no subscriber: dropped)\n"
        error = sdlab("brokers", "routing", "produce", "error", "Run. Run.", *common)
        assert error.stdout == " [x] Sent error:Run. Run.\n", error.stderr
        await subscriber.expect(" [x] ")
    assert subscriber.lines[1:] == [" [x] error:Run. Run."]


async def test_topics_match_star_for_one_word(
    rabbitmq_url: str, namespace: str, made: Made
) -> None:
    common = ["--exchange", made.exchange(f"{namespace}-topic_logs"), "--broker", rabbitmq_url]
    async with listening("topics", "consume", "kern.*", "*.critical", *common) as (subscriber,):
        for key in ["cron.info", "kern.disk.critical"]:  # `*` is one word: neither matches
            missed = sdlab("brokers", "topics", "produce", key, "missed", *common)
            assert missed.stdout == f" [x] Sent {key}:missed (no subscriber: dropped)\n"
        hit = sdlab("brokers", "topics", "produce", "kern.critical", "A critical error", *common)
        assert hit.stdout == " [x] Sent kern.critical:A critical error\n", hit.stderr
        await subscriber.expect(" [x] ")
    assert subscriber.lines[1:] == [" [x] kern.critical:A critical error"]  # once, not twice


def test_confirms_produce_then_consume(rabbitmq_url: str, namespace: str, made: Made) -> None:
    common = ["--queue", made.queue(f"{namespace}.confirms"), "--broker", rabbitmq_url]
    sent = sdlab("brokers", "confirms", "produce", "-n", "20", "--window", "5", *common)
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith(" [x] 20 confirmed in ")
    got = sdlab("brokers", "confirms", "consume", "-n", "20", *common)
    assert got.returncode == 0, got.stderr
    assert got.stdout == " [x] Received 20\n"


async def test_rpc_client_gets_the_servers_answers(
    rabbit: Rabbit, rabbitmq_url: str, namespace: str, made: Made
) -> None:
    """The server says it awaits requests once its queue is there: a client that calls
    at that line is not refused. (Its broker answers slowly here, through a proxy, so
    that a line printed before the queue was declared would be caught.)"""
    queue = made.queue(f"{namespace}.rpc_queue")
    async with proxied(rabbitmq_url) as (proxy, slow_url):
        proxy.delay = 0.2
        serving = ["rpc", "consume", "--queue", queue, "--broker", slow_url]
        async with listening(*serving, ready="Awaiting RPC requests") as (server,):
            channel = await rabbit.connection.channel()
            await channel.declare_queue(queue, passive=True)  # raises if it is not there
            await channel.close()
            call = [
                "brokers",
                "rpc",
                "produce",
                "10",
                "20",
                "--queue",
                queue,
                "--broker",
                rabbitmq_url,
            ]
            called = await asyncio.to_thread(sdlab, *call)  # the proxy runs in this loop
            assert called.returncode == 0, called.stderr
            assert called.stdout.splitlines() == [
                " [x] Requesting fib(10)",
                " [x] Requesting fib(20)",
                " [.] Got 55",
                " [.] Got 6765",
            ]
            await server.expect(" [.] fib(20)")
    assert sorted(server.lines[1:]) == [" [.] fib(10)", " [.] fib(20)"]


@asynccontextmanager
async def listening(
    *command: str, ready: str = "Waiting for messages", copies: int = 1
) -> AsyncIterator[list[Program]]:
    """`copies` of `sdlab brokers COMMAND` running and ready (each printed `ready`),
    killed at the end."""
    programs: list[Program] = []
    try:
        for _ in range(copies):
            programs.append(program := await Program.sdlab("brokers", *command))
            await program.expect(ready)
        yield programs
    finally:
        for program in programs:
            await program.stop()


def test_deadletter_demo_retries_then_parks(rabbitmq_url: str, namespace: str, made: Made) -> None:
    queue = f"{namespace}.jobs"
    for part in [queue, f"{queue}.retry.1", f"{queue}.dead"]:
        made.queue(part)
    common = ["--queue", queue, "--delay", "0.2", "--broker", rabbitmq_url]
    sent = sdlab("brokers", "deadletter", "produce", "fine", "fail hard", *common)
    assert sent.returncode == 0, sent.stderr
    worked = sdlab("brokers", "deadletter", "consume", "-n", "3", *common)
    assert worked.returncode == 0, worked.stderr
    assert sorted(worked.stdout.splitlines()) == [
        f" [x] fail hard: attempt 1 failed -> {queue}.retry.1",
        f" [x] fail hard: attempt 2 failed -> {queue}.dead",
        " [x] fine: attempt 1 done",
    ]


@pytest.mark.slow
def test_kafka_produce_consume_lag_replay(kafka_bootstrap: str, namespace: str, made: Made) -> None:
    topic, url = made.topic(f"{namespace}-cli"), f"kafka://{kafka_bootstrap}"
    sent = sdlab(
        "brokers",
        "kafka",
        "produce",
        "a",
        "b",
        "c",
        "--key",
        "k",
        "--topic",
        topic,
        "--broker",
        url,
    )
    assert sent.returncode == 0, sent.stderr
    partition = sent.stdout.split("partition ")[1].split(",")[0]
    assert sent.stdout.count(f"partition {partition},") == 3  # one key, one partition
    group = ["--topic", topic, "--group", f"{namespace}-g", "--broker", url]
    read = sdlab("brokers", "kafka", "consume", "-n", "3", "--session-timeout", "2", *group)
    assert read.returncode == 0, read.stderr
    assert [line.split(" (")[0] for line in read.stdout.splitlines()] == [
        " [x] a",
        " [x] b",
        " [x] c",
    ]
    lag = sdlab("brokers", "kafka", "lag", *group)
    assert lag.returncode == 0, lag.stderr
    assert "total lag: 0" in lag.stdout
    replayed = sdlab(
        "brokers", "kafka", "replay", "--topic", topic, "--offset", "2", "--broker", url
    )
    assert replayed.stdout == f" [x] c (partition {partition}, offset 2)\n"


def test_rpc_without_a_server_is_one_line_on_stderr(rabbitmq_url: str, namespace: str) -> None:
    done = sdlab(
        "brokers", "rpc", "produce", "30", "--queue", f"{namespace}.none", "--broker", rabbitmq_url
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: Unroutable: no queue '{namespace}.none': is an RPC server running?"
    ]


async def test_a_queue_declared_otherwise_is_one_line_on_stderr(
    rabbitmq_url: str, namespace: str, made: Made
) -> None:
    queue = made.queue(f"{namespace}.classic")
    async with await Rabbit.connect(rabbitmq_url) as rabbit:
        await rabbit.declare_queue(queue, arguments={})  # classic, as older tutorials
    done = sdlab("brokers", "work", "produce", "x.", "--queue", queue, "--broker", rabbitmq_url)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: TopologyMismatch: PRECONDITION_FAILED - inequivalent arg")
    assert "Traceback" not in done.stderr


def test_kafka_lag_of_an_unknown_topic_is_one_line(kafka_bootstrap: str, namespace: str) -> None:
    done = sdlab(
        "brokers",
        "kafka",
        "lag",
        "--topic",
        f"{namespace}-none",
        "--broker",
        f"kafka://{kafka_bootstrap}",
    )
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1
    assert "no topic" in done.stderr


async def test_kafka_produce_with_another_partition_count_is_one_line_on_stderr(
    kafka_bootstrap: str, namespace: str, made: Made
) -> None:
    topic = made.topic(f"{namespace}-counted")
    await create_topic(kafka_bootstrap, topic, partitions=3)
    url = f"kafka://{kafka_bootstrap}"
    done = sdlab(
        "brokers", "kafka", "produce", "x", "--partitions", "2", "--topic", topic, "--broker", url
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: TopologyMismatch: topic '{topic}' exists with 3 partitions, not 2 "
        "(delete it first to change the count)"
    ]
    kept = sdlab("brokers", "kafka", "produce", "y", "--topic", topic, "--broker", url)
    assert kept.returncode == 0, kept.stderr  # no count asked: the topic as it is


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port that refuses connections: bound here (so that nobody else takes it on this
    shared machine) but not listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    "url",
    ["amqp://guest:guest@127.0.0.1:{port}/", "kafka://127.0.0.1:{port}"],
    ids=["rabbitmq", "kafka"],
)
def test_a_broker_that_is_not_there_is_one_line_on_stderr(url: str, dead_port: int) -> None:
    command = ["hello", "produce"] if url.startswith("amqp") else ["kafka", "lag"]
    done = sdlab("brokers", *command, "--broker", url.format(port=dead_port), timeout=60)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    service = "RabbitMQ" if url.startswith("amqp") else "Kafka"
    assert line == (
        f"sdlab: cannot reach {service} at 127.0.0.1:{dead_port}: "
        "connection refused (nothing listens there)"
    )


async def test_a_worker_whose_connection_drops_says_so_in_one_line_and_exits_1(
    rabbitmq_url: str, namespace: str, made: Made
) -> None:
    queue = made.queue(f"{namespace}.tasks")
    async with proxied(rabbitmq_url) as (proxy, url):
        worker = await Program.sdlab(
            "brokers", "work", "consume", "--queue", queue, "--broker", url
        )
        try:
            await worker.expect("Waiting for messages")
            proxy.cut()
            assert await worker.finish() == 1
        finally:
            await worker.stop()
    (line,) = worker.lines[1:]
    assert line.startswith("error: ConsumerStopped: the connection to the broker was lost")


def sdlab_fed(stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`sdlab(*args)` with `stdin` on its standard input."""
    return subprocess.run(
        [sys.executable, "-m", "sdlab", *args],
        input=stdin,
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("command", "url", "says"),
    [
        (["hello", "produce"], "nonsense", "not a RabbitMQ URL (scheme '')"),
        (["hello", "produce"], "amqp://h:notaport/", "port 'notaport' is not a number"),
        (["hello", "produce"], "http://127.0.0.1:5672/", "not a RabbitMQ URL (scheme 'http')"),
        (["kafka", "lag"], "nonsense", "not a Kafka URL"),
        (["kafka", "lag"], "kafka://h:notaport", "'h:notaport' is not host:port"),
    ],
)
def test_a_url_that_names_no_broker_is_one_line_on_stderr(
    command: list[str], url: str, says: str
) -> None:
    done = sdlab("brokers", *command, "--broker", url, timeout=60)
    assert done.returncode == 1, done.stdout
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: InvalidUrl: ")
    assert says in line


@pytest.mark.parametrize(
    ("command", "kind"),
    [
        (["hello", "produce", "x", "--queue", "q" * 300], "queue"),
        (["routing", "produce", "k" * 300, "x"], "routing key"),
        (["topics", "consume", "k" * 300, "-n", "1"], "binding key"),
    ],
    ids=["queue", "routing-key", "binding-key"],
)
def test_a_name_too_long_for_amqp_is_one_line_on_stderr(
    command: list[str], kind: str, rabbitmq_url: str
) -> None:
    done = sdlab("brokers", *command, "--broker", rabbitmq_url, timeout=60)
    assert done.returncode == 1, done.stdout
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: InvalidName: {kind} ")
    assert line.endswith("is 300 bytes: AMQP allows 255")


async def test_kafka_replay_of_a_partition_the_topic_lacks_is_one_line_at_once(
    kafka_bootstrap: str, namespace: str, made: Made
) -> None:
    topic = made.topic(f"{namespace}-three")
    await create_topic(kafka_bootstrap, topic, partitions=3)
    url = f"kafka://{kafka_bootstrap}"
    done = sdlab(
        "brokers", "kafka", "replay", "--topic", topic, "--partition", "7", "--broker", url
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: UnknownTopicOrPartitionError: [Error 3] UnknownTopicOrPartitionError: "
        f"topic '{topic}' has partitions 0 to 2: no partition 7"
    ]


def test_kafka_topic_names_are_checked_before_the_broker_sees_them(kafka_bootstrap: str) -> None:
    url = f"kafka://{kafka_bootstrap}"
    done = sdlab("brokers", "kafka", "produce", "x", "--topic", "bad topic!", "--broker", url)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: InvalidTopicError: ")
    assert "topic 'bad topic!': a name is 1 to 249 of a-z A-Z 0-9 . _ -" in line


async def test_bodies_from_stdin_a_file_and_a_literal_at_sign(
    rabbitmq_url: str, namespace: str, made: Made, tmp_path: Path
) -> None:
    """A body of 300,000 characters: more than one argument can carry."""
    queue = made.queue(f"{namespace}.bodies")
    common = ["--queue", queue, "--broker", rabbitmq_url]
    big = tmp_path / "big.txt"
    big.write_text("y" * 300_000)
    sent = sdlab_fed("from stdin", "brokers", "work", "produce", "-", f"@{big}", "@@alice", *common)
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.splitlines() == [
        " [x] Sent from stdin",
        f" [x] Sent {'y' * 60}... (300,000 characters)",
        " [x] Sent @alice",
    ]
    got = []
    async with (
        await Rabbit.connect(rabbitmq_url) as rabbit,
        Queue(rabbit, queue, persistent=True).consume(prefetch=3) as messages,
    ):
        async for message in messages:
            got.append(text(message))
            await message.ack()
            if len(got) == 3:
                break
    assert got == ["from stdin", "y" * 300_000, "@alice"]


def test_a_body_file_that_cannot_be_read_is_a_usage_error(tmp_path: Path) -> None:
    done = sdlab("brokers", "hello", "produce", f"@{tmp_path / 'none.txt'}")
    assert done.returncode == 2
    assert "No such file or directory" in done.stderr


async def test_kafka_produce_sends_a_record_over_a_mebibyte(
    kafka_bootstrap: str, namespace: str, made: Made, tmp_path: Path
) -> None:
    topic = made.topic(f"{namespace}-big")
    big = tmp_path / "big.txt"
    big.write_text("z" * 2_000_000)
    url = f"kafka://{kafka_bootstrap}"
    sent = sdlab("brokers", "kafka", "produce", f"@{big}", "--topic", topic, "--broker", url)
    assert sent.returncode == 0, sent.stderr
    records = [record async for record in replay(kafka_bootstrap, topic)]
    assert [len(record.value) for record in records] == [2_000_000]
