"""The hashtag pipeline measured on the real broker and PostgreSQL (Kafka protocol: tansu).

- `hashtags`: end-to-end posts per second through generate -> extract -> count (the
  extractor and the counter as processes of their own, as deployed), against the raw
  broker's produce-to-consume rate for the same posts in the same run; and the delay from
  a post's creation to its count, at a steady rate.
- `hashtags-batch`: the counter alone over a full topic, batch size against throughput.
- `hashtags-crash`: the seed's counter (in memory, written every 10, acked as read) and
  ours, each SIGKILLed mid-stream and restarted: counts lost and counted twice.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Self

from sdlab import brokers, sql
from sdlab.bench import Bench, Chart, Experiment, Headline, Outcome, Row, register
from sdlab.brokers import Broker
from sdlab.hashtags import original, pipeline
from sdlab.hashtags.pipeline import Topics
from sdlab.hashtags.posts import Post, Posts, Tagged
from sdlab.hashtags.store import Store

TARGET = 0.5  # issue 20: the pipeline at least half the raw broker's rate
SESSION = 2.0  # seconds a killed member holds its partitions


def _prefix(what: str) -> str:
    return f"exp-{what}-{uuid.uuid4().hex[:8]}"


def direct_count(posts: list[Post]) -> dict[str, int]:
    return dict(Counter(tag.key for post in posts for tag in Tagged.of(post).tags))


async def _until(probe: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def _broker(url: str) -> AsyncIterator[Broker]:
    b = await pipeline.connect(url, session_timeout=SESSION)
    try:
        yield b
    finally:
        await b.close()


@asynccontextmanager
async def _store(server_url: str) -> AsyncIterator[Store]:
    async with (
        sql.scratch_database(server_url, prefix="sdlab_hashtags_exp") as url,
        sql.Database(url, max_size=4) as db,
    ):
        store = Store(db)
        await store.create()
        yield store


class Stage:
    """A stage as a process of its own: `sdlab hashtags <argv>`, or Python code."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.process: asyncio.subprocess.Process | None = None
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - its stderr, closed by stop()

    @classmethod
    def sdlab(cls, *argv: str) -> Self:
        return cls([sys.executable, "-m", "sdlab", "hashtags", *argv])

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=self.log,
        )

    def check(self) -> None:
        """Raise if the stage exited by itself, with the end of what it printed."""
        if self.process is not None and self.process.returncode is not None:
            self.log.seek(0)
            said = self.log.read().decode(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(
                f"{' '.join(self.argv[2:5])} exited with code {self.process.returncode}: "
                + " / ".join(said)
            )

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    async def stop(self) -> None:
        """SIGINT, as Ctrl-C: a clean stop; SIGKILL if it takes more than 10 s."""
        try:
            if self.process is None or self.process.returncode is not None:
                return
            self.process.send_signal(signal.SIGINT)
            try:
                async with asyncio.timeout(10):
                    await self.process.wait()
            except TimeoutError:
                await self.kill()
        finally:
            self.log.close()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None


def _posts(n: int, seed: int) -> list[Post]:
    return list(itertools.islice(Posts(seed=seed), n))


async def _fill_tagged(broker: Broker, topics: Topics, posts: list[Post]) -> int:
    """Put the tagged posts straight on `topics.tagged`; returns how many."""
    tagged = [Tagged.of(p) for p in posts]
    tagged = [t for t in tagged if t.tags]
    slots = asyncio.Semaphore(256)

    async def send(t: Tagged) -> None:
        async with slots:
            await broker.publish(topics.tagged, t.encode(), key=str(t.post.id))

    await asyncio.gather(*(send(t) for t in tagged))
    return len(tagged)


@register
@dataclass
class Throughput(Experiment):
    """Posts through the whole pipeline (generate, extract into a second topic, count into
    PostgreSQL one transaction per batch), the extractor and the counter each a process
    of its own, against the raw broker: the same posts produced to a topic and consumed
    by one group, in the same run. Then the delay from a post's creation to its count,
    with posts arriving at a steady rate."""

    name = "hashtags"
    system = "hashtags"
    title = "Hashtag pipeline: posts per second against the raw broker, delay to count"
    services = ("kafka", "postgres")

    posts: int = 50_000
    steady_rate: int = 500
    steady_seconds: float = 20.0
    batch_size: int = 500

    @classmethod
    def quick(cls) -> Self:
        return cls(posts=5_000, steady_seconds=5.0)

    async def run(self, bench: Bench) -> Outcome:
        broker_url = bench.endpoint("kafka").url
        server = bench.endpoint("postgres").url
        posts = _posts(self.posts, seed=1)
        tagged = sum(1 for p in posts if Tagged.of(p).tags)
        rows: list[Row] = []
        async with _broker(broker_url) as broker:
            with bench.progress("raw broker", total=1):
                raw = await self._raw(broker, posts)
            rows.append(
                {
                    "run": "raw broker: produce -> consume",
                    "posts": len(posts),
                    "posts/s": round(raw),
                    "vs raw": 1.0,
                }
            )
            async with _store(server) as store:
                topics = Topics(_prefix("pipe"))
                await topics.declare(broker)
                stages = self._stages(broker_url, store.db.url, topics)
                for stage in stages:
                    await stage.start()
                try:
                    with bench.progress("stages joining", total=1):
                        warm = await self._warm(broker, store, topics, stages)
                    with bench.progress("pipeline, steady", total=1):
                        delays, steady = await self._steady(broker, store, topics, stages)
                    rows.append(
                        {
                            "run": f"pipeline at {self.steady_rate:,} posts/s",
                            "posts": round(self.steady_rate * self.steady_seconds),
                            "posts/s": self.steady_rate,  # what it was sent at, and kept up with
                            "p50 delay (ms)": round(delays[0] * 1000, 1),
                            "p99 delay (ms)": round(delays[1] * 1000, 1),
                        }
                    )
                    with bench.progress("pipeline, flat out", total=1):
                        rate = await self._flat_out(broker, store, topics, stages, posts, tagged)
                    rows.append(
                        {
                            "run": "pipeline: generate -> extract -> count",
                            "posts": len(posts),
                            "posts/s": round(rate),
                            "vs raw": round(rate / raw, 3),
                        }
                    )
                    expected = direct_count(warm + steady + posts)
                    exact = await store.totals() == expected
                finally:
                    for stage in stages:
                        await stage.stop()
                await self._delete(broker, topics)
        notes = [
            f"Counts exact against a direct count of every post: {'yes' if exact else 'NO'}.",
            "The raw broker's rate is one producer (256 sends in flight, acks=all) and one "
            "consumer group acking each message, in one process; the pipeline's adds a "
            "second topic, the extraction, and a PostgreSQL transaction per "
            f"{self.batch_size} posts.",
            "Delay: from the post's creation (the generator's clock) to its row's insert "
            "in the counting transaction (the commit follows within milliseconds).",
        ]
        return Outcome(
            rows, chart=Chart("run", ["posts/s"], ylabel="posts per second"), notes=notes
        )

    def _stages(self, broker_url: str, db_url: str, topics: Topics) -> list[Stage]:
        # The default session (10 s): flat out, the two cores are busy enough to delay a
        # heartbeat past 2 s, and a member dropped for it stops the stage to rejoin.
        common = ["--broker", broker_url, "--prefix", topics.prefix]
        return [
            Stage.sdlab("extractor", *common),
            Stage.sdlab("counter", *common, "--db", db_url, "--batch-size", str(self.batch_size)),
        ]

    async def _raw(self, broker: Broker, posts: list[Post]) -> float:
        """Posts per second from the first produced to the last consumed, once the
        consumer has joined its group (a first message consumed before the clock)."""
        topics = Topics(_prefix("raw"))
        await broker.declare(topics.posts, groups=["raw"])
        got = 0

        async def consume() -> None:
            nonlocal got
            async with broker.consume(topics.posts, "raw", prefetch=1000) as messages:
                async for message in messages:
                    await message.ack()
                    got += 1

        consumer = asyncio.create_task(consume())

        async def consumed(n: int) -> bool:
            if consumer.done():
                consumer.result()
            return got >= n

        try:
            await pipeline.generate(broker, topics, _posts(1, seed=9))
            await _until(lambda: consumed(1), 120, "the raw consumer joining")
            start = time.perf_counter()
            await pipeline.generate(broker, topics, posts)
            await _until(lambda: consumed(1 + len(posts)), 300, "the raw consumer")
            return len(posts) / (time.perf_counter() - start)
        finally:
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
            await broker.delete(topics.posts, groups=["raw"])

    async def _warm(
        self, broker: Broker, store: Store, topics: Topics, stages: list[Stage]
    ) -> list[Post]:
        """One post through, so that both stages have joined their groups."""
        warm = [Post(1, 1, "warming up #warmup", round(time.time(), 3))]
        await pipeline.generate(broker, topics, warm)

        async def counted() -> bool:
            for stage in stages:
                stage.check()
            return (await store.summary())["posts"] >= 1

        await _until(counted, 120, "the stages joining their groups")
        return warm

    async def _steady(
        self, broker: Broker, store: Store, topics: Topics, stages: list[Stage]
    ) -> tuple[list[float], list[Post]]:
        n = round(self.steady_rate * self.steady_seconds)
        since = time.time()
        posts: list[Post] = []

        def written() -> Iterator[Post]:  # each post created when its turn comes
            for post in itertools.islice(Posts(seed=2), n):
                posts.append(post)
                yield post

        before = (await store.summary())["posts"]
        await pipeline.generate(broker, topics, written(), rate=self.steady_rate)
        want = before + sum(1 for p in posts if Tagged.of(p).tags)

        async def counted() -> bool:
            for stage in stages:
                stage.check()
            return (await store.summary())["posts"] >= want

        await _until(counted, 120, "the steady posts counted")
        return await store.delays((0.5, 0.99), since=since), posts

    async def _flat_out(
        self,
        broker: Broker,
        store: Store,
        topics: Topics,
        stages: list[Stage],
        posts: list[Post],
        tagged: int,
    ) -> float:
        before = (await store.summary())["posts"]
        start = time.perf_counter()
        await pipeline.generate(broker, topics, posts)

        async def counted() -> bool:
            for stage in stages:
                stage.check()
            return (await store.summary())["posts"] >= before + tagged

        await _until(counted, 300, f"{before + tagged:,} posts counted")
        return len(posts) / (time.perf_counter() - start)

    @staticmethod
    async def _delete(broker: Broker, topics: Topics) -> None:
        await broker.delete(topics.posts, groups=[topics.extractor])
        await broker.delete(topics.tagged, groups=[topics.counter])

    def headline(self, rows: list[Row]) -> Headline | None:
        pipe = next(r for r in rows if r["run"].startswith("pipeline:"))
        return Headline(
            f"pipeline / raw broker posts/s, {pipe['posts']:,} posts",
            pipe["vs raw"],
            unit="x",
            target=TARGET,
            better="higher",
        )


@register
@dataclass
class BatchSize(Experiment):
    """The counter alone, in this process, over a topic holding every tagged post
    already: posts counted per second for each batch size (one PostgreSQL transaction
    per batch). A batch of 1 is a transaction per post; the seed wrote a row per 10
    mentions of a tag."""

    name = "hashtags-batch"
    system = "hashtags"
    title = "Hashtag counter: batch size against throughput"
    services = ("kafka", "postgres")

    posts: int = 20_000
    sizes: tuple[int, ...] = (1, 10, 100, 500, 2000)

    @classmethod
    def quick(cls) -> Self:
        return cls(posts=3_000, sizes=(1, 100, 1000))

    async def run(self, bench: Bench) -> Outcome:
        broker_url = bench.endpoint("kafka").url
        server = bench.endpoint("postgres").url
        posts = _posts(self.posts, seed=3)
        rows: list[Row] = []
        async with _broker(broker_url) as broker:
            prefix = _prefix("batch")
            await Topics(prefix).declare(broker)
            tagged = await _fill_tagged(broker, Topics(prefix), posts)
            with bench.progress("batch sizes", total=len(self.sizes)) as advance:
                for size in self.sizes:
                    topics = Topics(prefix, counter_group=f"{prefix}.b{size}")
                    async with _store(server) as store:
                        rate, batches = await self._count(broker, store, topics, size, tagged)
                    rows.append(
                        {
                            "batch size": size,
                            "posts": tagged,
                            "transactions": batches,
                            "posts/s": round(rate),
                        }
                    )
                    advance()
            await broker.delete(Topics(prefix).tagged)
            await broker.delete(Topics(prefix).posts)
        return Outcome(
            rows,
            chart=Chart(
                "batch size", ["posts/s"], kind="line", logx=True, ylabel="posts counted per second"
            ),
            notes=[
                "Each size reads the same topic as a consumer group of its own into a "
                "fresh database; the clock starts once its first batch is counted "
                "(the join to the group left out)."
            ],
        )

    @staticmethod
    async def _count(
        broker: Broker, store: Store, topics: Topics, size: int, tagged: int
    ) -> tuple[float, int]:
        progress = pipeline.Progress()
        first: tuple[float, int] | None = None

        def on_batch(_: object) -> None:
            nonlocal first
            if first is None:  # the clock starts after the first batch: the join is out
                first = (time.perf_counter(), progress.counted)

        task = asyncio.create_task(
            pipeline.count(
                broker, store, topics, batch_size=size, progress=progress, on_batch=on_batch
            )
        )

        async def done() -> bool:
            if task.done():
                task.result()
            return progress.counted >= tagged

        try:
            await _until(done, 600, f"batch size {size}")
            assert first is not None
            start, counted = first
            return (tagged - counted) / (time.perf_counter() - start), progress.batches
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@register
@dataclass
class Crash(Experiment):
    """The seed's counter and ours, each killed with SIGKILL `kills` times while it
    counts a topic of tagged posts, and started again; once the topic is read, the
    counts against a direct count of the posts. The seed's holds counts in memory and
    writes a tag's every 10, acking each message as it reads it (auto-commit): a kill
    loses what it held, and the messages read since the last offset commit come back,
    counting twice what was written. Ours commits the counts and the offsets in one
    transaction and acks after: nothing lost, nothing twice."""

    name = "hashtags-crash"
    system = "hashtags"
    title = "Hashtag counters killed: the seed's flush-every-10 against ours"
    services = ("kafka", "postgres")

    posts: int = 60_000
    kills: int = 3

    @classmethod
    def quick(cls) -> Self:
        return cls(posts=20_000, kills=2)

    async def run(self, bench: Bench) -> Outcome:
        broker_url = bench.endpoint("kafka").url
        server = bench.endpoint("postgres").url
        posts = _posts(self.posts, seed=4)
        truth = direct_count(posts)
        rows: list[Row] = []
        async with _broker(broker_url) as broker:
            with bench.progress("counters killed", total=2) as advance:
                for kind in (
                    "seed: in memory, written every 10",
                    "sdlab: offsets in the transaction",
                ):
                    topics = Topics(_prefix("crash"))
                    await topics.declare(broker)
                    await _fill_tagged(broker, topics, posts)
                    async with _store(server) as store:
                        seed = kind.startswith("seed")
                        got = await self._killed(broker_url, store, topics, seed=seed)
                    rows.append(self._row(kind, truth, got))
                    await broker.delete(topics.tagged)
                    await broker.delete(topics.posts)
                    advance()
        return Outcome(
            rows,
            chart=Chart("counter", ["counts lost", "counts doubled"]),
            notes=[
                f"{self.posts:,} posts, {sum(truth.values()):,} mentions of "
                f"{len(truth):,} tags; each counter SIGKILLed {self.kills} "
                "times while counting, then run to the end and stopped "
                "cleanly (the seed's then writes what it holds)."
            ],
        )

    def _row(self, kind: str, truth: dict[str, int], got: dict[str, int]) -> Row:
        lost = sum(max(0, n - got.get(k, 0)) for k, n in truth.items())
        doubled = sum(max(0, n - truth.get(k, 0)) for k, n in got.items())
        wrong = sum(1 for k in truth.keys() | got.keys() if truth.get(k) != got.get(k))
        return {
            "counter": kind,
            "kills": self.kills,
            "counts lost": lost,
            "counts doubled": doubled,
            "tags wrong": wrong,
            "exact": "yes" if got == truth else "no",
        }

    async def _killed(
        self, broker_url: str, store: Store, topics: Topics, *, seed: bool
    ) -> dict[str, int]:
        db_url = store.db.url
        if seed:
            stage = Stage(
                [
                    sys.executable,
                    "-c",
                    "import asyncio, sys; from sdlab.hashtags import original; "
                    "asyncio.run(original.main(*sys.argv[1:]))",
                    broker_url,
                    db_url,
                    topics.prefix,
                ]
            )
            group = f"{topics.prefix}.{original.GROUP}"
        else:
            stage = Stage.sdlab(
                "counter",
                "--broker",
                broker_url,
                "--db",
                db_url,
                "--prefix",
                topics.prefix,
                "--session-timeout",
                str(SESSION),
            )
            group = topics.counter
        bootstrap = brokers.kafka.bootstrap_of(broker_url)

        async def lag() -> int:
            return sum(lag.lag for lag in await brokers.group_lag(bootstrap, topics.tagged, group))

        total = await lag()
        for i in range(self.kills):
            await stage.start()
            # kill once it has read a share of the topic: spread over the stream
            share = total * (i + 1) // (self.kills + 1)

            async def read_enough(share: int = share) -> bool:
                return total - await lag() >= share or not stage.running

            await _until(read_enough, 300, "the counter reading")
            await stage.kill()
        await stage.start()

        async def drained() -> bool:
            return await lag() == 0 or not stage.running

        await _until(drained, 600, "the counter finishing")
        await asyncio.sleep(1.0)  # the last batch's commit, then the broker's
        await stage.stop()
        if seed:
            return await original.totals(store.db)
        return await store.totals()

    def headline(self, rows: list[Row]) -> Headline | None:
        ours = next(r for r in rows if r["counter"].startswith("sdlab"))
        seed = next(r for r in rows if r["counter"].startswith("seed"))
        return Headline(
            f"counts wrong after {ours['kills']} kills (lost + doubled)",
            ours["counts lost"] + ours["counts doubled"],
            target=0,
            seed=seed["counts lost"] + seed["counts doubled"],
            seed_note="the seed's counter, killed the same way in this run",
        )


ALL: list[type[Experiment]] = [Throughput, BatchSize, Crash]
