"""`sdlab hashtags`: generate posts, extract and count their hashtags, serve the counts.

Each stage is a command of its own, to run as its own process (several extractors or
counters share the work as one consumer group); `run` starts them all in one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.text import Text

from sdlab import brokers, frontend, infra, lab, sql
from sdlab.console import console, on_stdout, progress_console
from sdlab.hashtags import pipeline
from sdlab.hashtags.extract import hashtags
from sdlab.hashtags.pipeline import Progress, Topics
from sdlab.hashtags.posts import Posts
from sdlab.hashtags.store import Store

DEFAULT_PORT = 8020  # each service its own default (docs/infra.md)
DATABASE = "sdlab_hashtags"

app = typer.Typer(
    help="Hashtag counting (sdlab.hashtags): posts on a broker, hashtags extracted, "
    "counts kept exact in PostgreSQL through crashes, trending by growth, a live page.\n\n"
    "  sdlab hashtags run                     # the whole pipeline, page at :8020\n\n"
    "Or one process per stage: `generate`, `extractor`, `counter`, `serve`. The library "
    "is `from sdlab.hashtags import hashtags, Posts, Store, pipeline`; see docs/hashtags.md.",
    no_args_is_help=True,
)

Broker = Annotated[
    str | None,
    frontend.broker_option(
        "kafka://host:port (Kafka) or amqp://... (RabbitMQ); default: the Kafka broker "
        "sdlab finds (SDLAB_KAFKA_URL or its private one)."
    ),
]
Db = Annotated[
    str,
    frontend.db_option(
        f"The store: `postgres` (the server sdlab finds, database `{DATABASE}`) or a "
        "postgresql:// URL.",
        metavar="postgres|URL",
    ),
]
Prefix = Annotated[
    str,
    typer.Option(help="Topic prefix: PREFIX.posts and PREFIX.tagged (pipelines apart)."),
]
Rate = Annotated[
    float,
    typer.Option(min=0, help="Posts per second; 0: as fast as the broker takes them."),
]
Count = Annotated[
    int | None, typer.Option("--count", "-n", min=1, help="Stop after this many posts.")
]
BatchSize = Annotated[
    int, typer.Option(min=1, max=10_000, help="Messages per store transaction, at most.")
]
MaxWait = Annotated[
    float,
    typer.Option(
        min=0.001, max=60, help="Seconds the first message of a batch waits for the rest."
    ),
]
SessionTimeout = Annotated[
    float,
    typer.Option(
        min=1,
        max=300,
        help="Kafka: seconds the group waits for a silent member (one killed) before "
        "giving its partitions to the others.",
    ),
]
Seed = Annotated[int | None, typer.Option(help="Seed of the text (ids and times differ).")]


def _broker_url(url: str | None) -> str:
    return url or infra.up(["kafka"])["kafka"].url


def _db_url(db: str) -> str:
    try:
        url = frontend.database_url(db, DATABASE)
    except ValueError as exc:
        frontend.fail(exc, system="hashtags")
    if sql.engine_of(url) != "postgresql":
        frontend.fail(ValueError(f"--db {db}: the hashtag store is PostgreSQL"))
    return url


def _run(work: Coroutine[Any, Any, Any]) -> Any:
    """Run a command; what a user can meet is one line on stderr (sdlab.cli.main)."""
    for library in ("aiormq", "aio_pika", "aiokafka"):
        logging.getLogger(library).setLevel(logging.CRITICAL)
    try:
        return asyncio.run(work)
    except (brokers.BrokerError, sql.SQLError, ValueError) as exc:
        frontend.fail(exc, system="hashtags")


@contextlib.asynccontextmanager
async def _store(url: str, pool: int = 4) -> AsyncIterator[Store]:
    await sql.ensure_database(url)
    async with sql.Database(url, max_size=pool) as db:
        store = Store(db)
        await store.create()
        yield store


@contextlib.asynccontextmanager
async def _live(line: Callable[[float], str]) -> AsyncIterator[None]:
    """A progress line redrawn twice a second (where a terminal is), given the seconds
    since the start."""
    where = progress_console()
    start = time.monotonic()

    async def redraw(live: Live) -> None:
        while True:
            await asyncio.sleep(0.5)
            live.update(Text(line(time.monotonic() - start)))

    with Live(Text(""), console=where, transient=False, redirect_stdout=on_stdout(where)) as live:
        task = asyncio.create_task(redraw(live))
        try:
            yield
        finally:
            task.cancel()
            live.update(Text(line(time.monotonic() - start)))


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}/s" if seconds > 0 else "-"


@app.command()
def extract(
    text: Annotated[str, typer.Argument(help="A post's text; `-` reads it from stdin.")],
) -> None:
    """Print the hashtags in TEXT, one per line, as written (each once).

    Examples:

      sdlab hashtags extract 'Loving #Python and #café, not #2024 or a.com/#x'

      echo 'C# is not a tag, #this is' | sdlab hashtags extract -
    """
    if text == "-":
        text = sys.stdin.read()
    for tag in hashtags(text):
        console.print(tag.display, highlight=False, markup=False)


@app.command()
def generate(
    broker: Broker = None,
    rate: Rate = 100.0,
    count: Count = None,
    seed: Seed = None,
    tags: Annotated[int, typer.Option(min=1, help="Distinct tags to draw from.")] = 2000,
    skew: Annotated[float, typer.Option(min=0.01, help="Zipf exponent of the tags.")] = 1.1,
    machine: Annotated[
        int, typer.Option(min=0, max=1023, help="Snowflake machine id of the post ids.")
    ] = 0,
    prefix: Prefix = "hashtags",
) -> None:
    """Write posts to PREFIX.posts, keyed by post id: RATE per second, COUNT in all.

    Examples:

      sdlab hashtags generate --rate 500 --count 10000

      sdlab hashtags generate --rate 0 -n 100000           # as fast as possible
    """
    url, topics = _broker_url(broker), Topics(prefix)

    async def work() -> None:
        b = await pipeline.connect(url)
        try:
            await topics.declare(b)
            posts = Posts(seed=seed, tags=tags, skew=skew, machine=machine)
            chosen = posts if count is None else itertools.islice(posts, count)
            progress = Progress()
            async with _live(lambda s: f"posts sent {progress.sent:,} ({_rate(progress.sent, s)})"):
                await pipeline.generate(b, topics, chosen, rate=rate or None, progress=progress)
        finally:
            await b.close()

    _run(work())


@app.command()
def extractor(
    broker: Broker = None,
    prefetch: Annotated[
        int, typer.Option(min=2, help="Posts in hand at once (two batches of half).")
    ] = 1000,
    prefix: Prefix = "hashtags",
    session_timeout: SessionTimeout = 10.0,
) -> None:
    """Read PREFIX.posts, send each post's hashtags to PREFIX.tagged, until Ctrl-C.

    Run several: they share the posts as the consumer group PREFIX.extractor.
    """
    url, topics = _broker_url(broker), Topics(prefix)

    async def work() -> None:
        b = await pipeline.connect(url, session_timeout=session_timeout)
        try:
            await topics.declare(b)
            p = Progress()
            async with _live(
                lambda s: f"posts read {p.acked:,} ({_rate(p.acked, s)}), sent on {p.sent:,}"
            ):
                await pipeline.extract(b, topics, prefetch=prefetch, progress=p)
        finally:
            await b.close()

    _run(work())


@app.command()
def counter(
    broker: Broker = None,
    db: Db = "postgres",
    batch_size: BatchSize = 500,
    max_wait: MaxWait = 0.05,
    prefix: Prefix = "hashtags",
    session_timeout: SessionTimeout = 10.0,
) -> None:
    """Count PREFIX.tagged into the store, one transaction per batch, until Ctrl-C.

    Exact through crashes: kill it (even with SIGKILL) and start it again, and no post
    is lost or counted twice. Several share the work as the consumer group PREFIX.counter.
    """
    url, store_url, topics = _broker_url(broker), _db_url(db), Topics(prefix)

    async def work() -> None:
        b = await pipeline.connect(url, session_timeout=session_timeout)
        try:
            await topics.declare(b)
            async with _store(store_url) as store:
                p = Progress()
                tidy = asyncio.create_task(pipeline.tidy(store))
                try:
                    async with _live(
                        lambda s: (
                            f"posts counted {p.counted:,} "
                            f"({_rate(p.counted, s)}) in {p.batches:,} batches, "
                            f"{p.skipped + p.duplicates:,} seen before"
                        )
                    ):
                        await pipeline.count(
                            b,
                            store,
                            topics,
                            batch_size=batch_size,
                            max_wait=max_wait,
                            progress=p,
                        )
                finally:
                    tidy.cancel()
        finally:
            await b.close()

    _run(work())


def _uvicorn(store_url: str, host: str, port: int) -> Any:
    from sdlab.hashtags.service import create_app, server

    return server(
        create_app(store_url), host=host, port=port, log_level="warning", access_log=False
    )


@app.command()
def serve(
    host: Annotated[str, frontend.host_option()] = "127.0.0.1",
    port: Annotated[int, frontend.port_option()] = DEFAULT_PORT,
    db: Db = "postgres",
) -> None:
    """Serve the counts and the live trending page until Ctrl-C.

    Examples:

      sdlab hashtags serve --port 8020                     # page at http://127.0.0.1:8020/

      curl 'localhost:8020/tag/python'

      curl 'localhost:8020/hashtags?limit=10'

      curl 'localhost:8020/trending?window=15m'
    """
    store_url = _db_url(db)
    _run(sql.ensure_database(store_url))
    console.print(
        f"serving http://{host}:{port}: {sql.redact(store_url)}; Ctrl-C to stop", highlight=False
    )
    _uvicorn(store_url, host, port).run()


@app.command()
def run(
    broker: Broker = None,
    db: Db = "postgres",
    rate: Rate = 200.0,
    count: Count = None,
    seed: Seed = None,
    batch_size: BatchSize = 500,
    max_wait: MaxWait = 0.05,
    host: Annotated[str, frontend.host_option()] = "127.0.0.1",
    port: Annotated[int, frontend.port_option()] = DEFAULT_PORT,
    prefix: Prefix = "hashtags",
) -> None:
    """The whole pipeline in one process: generate, extract, count, serve; until Ctrl-C.

    The line below shows posts per second at each stage and how far the counts are
    behind the posts. Each stage also runs as its own process (`generate`,
    `extractor`, `counter`, `serve`).

    Examples:

      sdlab hashtags run                                   # 200 posts/s, page at :8020

      sdlab hashtags run --rate 0 --count 100000           # as fast as possible

      sdlab hashtags run --broker amqp://guest:guest@127.0.0.1:5672/
    """
    url, store_url, topics = _broker_url(broker), _db_url(db), Topics(prefix)

    async def work() -> None:
        b = await pipeline.connect(url)
        try:
            await topics.declare(b)
            async with _store(store_url, pool=8) as store:
                gen, ext, cnt = Progress(), Progress(), Progress()
                server = _uvicorn(store_url, host, port)
                posts = Posts(seed=seed)
                chosen = posts if count is None else itertools.islice(posts, count)
                tasks = [
                    asyncio.create_task(pipeline.extract(b, topics, progress=ext)),
                    asyncio.create_task(
                        pipeline.count(
                            b, store, topics, batch_size=batch_size, max_wait=max_wait, progress=cnt
                        )
                    ),
                    asyncio.create_task(pipeline.tidy(store)),
                    asyncio.create_task(server.serve()),
                ]

                def line(s: float) -> str:
                    behind = (gen.sent - ext.acked) + (ext.sent - cnt.acked)
                    return (
                        f"posts {gen.sent:,} ({_rate(gen.sent, s)}) -> extracted "
                        f"{ext.acked:,} -> counted {cnt.counted:,} ({_rate(cnt.counted, s)}); "
                        f"behind {behind:,} messages; http://{host}:{port}/"
                    )

                console.print(f"{url} -> {sql.redact(store_url)}; Ctrl-C to stop", highlight=False)
                try:
                    async with _live(line):
                        await pipeline.generate(b, topics, chosen, rate=rate or None, progress=gen)
                        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                        for task in done:
                            task.result()
                finally:
                    server.should_exit = True
                    for task in tasks[:3]:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await b.close()

    _run(work())


@app.command()
def status(
    broker: Broker = None,
    db: Db = "postgres",
    prefix: Prefix = "hashtags",
) -> None:
    """The store's totals and how far the counter has read each partition."""
    url, store_url, topics = _broker_url(broker), _db_url(db), Topics(prefix)

    async def work() -> None:
        async with _store(store_url) as store:
            summary = await store.summary()
            consumed = await store.consumed(topics.tagged, topics.counter)
        console.print(
            f"{summary['posts']:,} posts counted, {summary['tags']:,} tags, "
            f"{summary['mentions']:,} mentions",
            highlight=False,
        )
        if url.startswith("kafka://"):
            lags = await brokers.group_lag(
                brokers.kafka.bootstrap_of(url), topics.tagged, topics.counter
            )
            for lag in lags:
                console.print(
                    f"{topics.tagged}[{lag.partition}]: end {lag.end:,}, stored "
                    f"{consumed.get(lag.partition, 0):,}, committed to the broker "
                    f"{lag.committed if lag.committed is not None else '-'}",
                    highlight=False,
                )

    _run(work())


@app.command()
def experiment(quick: lab.Quick = False, out: lab.ReportDir = None) -> None:
    """The lab's hashtag experiments: throughput against the raw broker, the delay from
    post to count, batch size, and the seed's flush-every-10 counter killed beside ours.

    Examples:

      sdlab hashtags experiment --quick

      sdlab lab run --only hashtags                        # the same, in the lab's report
    """
    from sdlab.hashtags.experiment import ALL

    chosen = [cls.quick() if quick else cls() for cls in ALL]
    lab.run_as_command(chosen, quick=quick, out=out)
