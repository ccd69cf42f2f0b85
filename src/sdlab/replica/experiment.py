"""The replica experiments, on clusters of private MariaDB servers built for each one.

`sdlab lab run --only replica` (or `sdlab replica experiment`) runs them all:

- replica-lag: write on the primary to readable on the replica, at increasing write rates
- replica-commit: what a commit costs without a replica, with one (async), with semi-sync,
  and when the writer also waits until the replica has applied it
- replica-reads: read throughput through the router with 0, 1 and 2 replicas
- replica-ryw: the cost of read-your-writes, and the stale reads without it
- replica-failover: acknowledged writes a failover loses, async beside semi-sync

The seed published no figures for the replica: it was a manual walk-through (Docker,
binlog positions copied by hand), so there is nothing to print beside these.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from time import perf_counter, perf_counter_ns
from typing import Any

from sdlab import infra, sql
from sdlab.bench import Bench, Chart, Experiment, Headline, Latency, Outcome, Row, register
from sdlab.infra.instance import Instances
from sdlab.replica import PrimaryUnavailable, Router, failover, setup

NO_SEED = (
    "The seed published no figures for the replica: it was a manual walk-through "
    "(Docker, binlog positions copied by hand)."
)
SHARED_CPU = (
    "Every server and the client share this machine's 2 cores: a replica adds no CPU, "
    "so these are the costs of the mechanisms, not of a fleet of machines."
)
SCHEMA = (
    "CREATE TABLE bench.events (id BIGINT PRIMARY KEY, payload VARCHAR(100) NOT NULL)",
    "CREATE TABLE bench.items (id INT PRIMARY KEY, grp INT NOT NULL, payload VARCHAR(100) NOT NULL,"
    " KEY (grp))",
)


@dataclass
class Cluster:
    servers: Instances
    nodes: dict[str, str]
    """name -> root URL"""

    @property
    def app(self) -> dict[str, str]:
        return {name: setup.app_url(url) for name, url in self.nodes.items()}

    @property
    def primary(self) -> str:
        return self.app["db1"]


@asynccontextmanager
async def cluster(
    replicas: int, *, semisync: bool = False, items: int = 0
) -> AsyncIterator[Cluster]:
    """A primary and `replicas` replicas, with the bench tables (and `items` rows in
    bench.items) in the snapshot the replicas are seeded from."""
    options = setup.server_options(semisync=semisync)
    servers = await asyncio.to_thread(infra.mariadb, 1 + replicas, options=options)
    try:
        nodes = {f"db{i}": server.url for i, server in enumerate(servers, 1)}
        async with setup.admin(nodes["db1"]) as s:
            await s.execute("CREATE DATABASE bench")
            for ddl in SCHEMA:
                await s.execute(ddl)
            for first in range(0, items, 1000):
                values = ", ".join(
                    f"({i}, {i % 100}, REPEAT('x', 100))"
                    for i in range(first, min(items, first + 1000))
                )
                await s.execute(f"INSERT INTO bench.items VALUES {values}")
        replica_nodes = {n: u for n, u in nodes.items() if n != "db1"}
        await setup.build(nodes["db1"], replica_nodes, semisync=semisync)  # users even with none
        yield Cluster(servers, nodes)
    finally:
        await asyncio.to_thread(servers.close)


# -- replication lag ------------------------------------------------------------------


@register
@dataclass
class ReplicationLag(Experiment):
    """Write on the primary to readable on the replica, at increasing write rates: 4
    writers insert rows at the rate asked (open loop), and a reader on the replica polls
    for new rows; each row's lag is from its commit being acknowledged to its first
    sighting on the replica (0 when it was there before the acknowledgement arrived)."""

    name = "replica-lag"
    system = "replica"
    title = "Replication lag by write rate"
    seconds: float = 5.0
    rates: tuple[int, ...] = (100, 500, 1000, 2000, 0)  # 0: as fast as 4 writers go
    apply_threads: tuple[int, ...] = (0, 4)
    """The replica's slave_parallel_threads: 0 applies one transaction at a time."""

    @classmethod
    def quick(cls) -> ReplicationLag:
        return cls(seconds=2.0, rates=(100, 500, 1000, 0))

    async def run(self, bench: Bench) -> Outcome:
        rows = []
        for threads in self.apply_threads:
            async with cluster(1) as c, sql.Database(c.primary, max_size=4) as db:
                await _apply_threads(c.nodes["db2"], threads)
                replica = await sql.connect(c.app["db2"])
                ids = itertools.count(1)
                try:
                    for rate in self.rates:
                        label = f"lag at {rate or 'max'} writes/s, {threads} apply threads"
                        with bench.progress(label, total=None):
                            row = await self._at(rate, db, replica, ids)
                            rows.append({"replica apply threads": threads, **row})
                finally:
                    await replica.close()
        return Outcome(
            rows,
            chart=Chart(
                "target writes/s",
                ["lag p99 (ms)"],
                kind="line",
                group="replica apply threads",
                logy=True,
                ylabel="replica lag p99 (ms, log scale)",
            ),
            notes=[
                NO_SEED,
                "Seconds_Behind_Master, what MariaDB reports as lag, counts whole seconds; "
                "only a probe like this one (or GTID positions) sees sub-second lag.",
                "With 0 apply threads the replica commits one transaction at a time, each "
                "with its own log flush, while the primary flushes concurrent commits "
                "together (group commit): past the rate one thread keeps up with, the lag "
                "grows for as long as the writes go on. Parallel replication (optimistic "
                "mode) applies a group's transactions at once.",
            ],
        )

    async def _at(self, rate: int, db: sql.Database, replica: sql.Session, ids: Any) -> Row:
        committed: dict[int, float] = {}
        seen: dict[int, float] = {}
        writers, written = 4, asyncio.Event()
        end = perf_counter() + self.seconds
        first = next(ids)  # ids from here on are this phase's

        async def write(k: int) -> None:
            interval = writers / rate if rate else 0.0
            due = perf_counter() + k * interval / writers
            while perf_counter() < end:
                if interval:
                    await asyncio.sleep(max(0.0, due - perf_counter()))
                    due += interval
                i = next(ids)
                await db.execute("INSERT INTO bench.events VALUES (%s, 'x')", (i,))
                committed[i] = perf_counter()

        async def write_all() -> None:
            await asyncio.gather(*(write(k) for k in range(writers)))
            written.set()

        async def poll() -> None:
            low = first + 1  # every id taken after `first` is written
            while not (written.is_set() and all(i in seen for i in committed)):
                if perf_counter() > end + 10:
                    return  # anything unseen by now is reported as not seen
                found = await replica.fetch("SELECT id FROM bench.events WHERE id >= %s", (low,))
                now = perf_counter()
                for (i,) in found:
                    seen.setdefault(i, now)
                while low in seen:
                    low += 1

        await asyncio.gather(write_all(), poll())
        lag = Latency()
        for i, at in committed.items():
            if i in seen:
                lag.record(max(1, int((seen[i] - at) * 1e9)))
        return {
            "target writes/s": rate or "max",
            "writes/s": round(len(committed) / self.seconds),
            "lag p50 (ms)": lag.percentile_ms(50),
            "lag p99 (ms)": lag.percentile_ms(99),
            "lag max (ms)": lag.max_ms,
            "not seen": len(committed) - sum(1 for i in committed if i in seen),
        }


async def _apply_threads(replica: str, threads: int) -> None:
    async with setup.admin(replica) as s:
        await s.execute("STOP SLAVE")
        await s.execute(f"SET GLOBAL slave_parallel_threads = {threads}")
        await s.execute("SET GLOBAL slave_parallel_mode = 'optimistic'")
        await s.execute("START SLAVE")


# -- commit latency -------------------------------------------------------------------


@register
@dataclass
class CommitCost(Experiment):
    """What one autocommit INSERT costs the writer: one at a time (latency), and 8 at
    once (throughput). Without a replica; with one, asynchronous; with one, semi-sync
    (the commit waits for the replica to have the event in its relay log); and
    asynchronous with the writer waiting until the replica has applied it
    (MASTER_GTID_WAIT), the closest MariaDB's replication comes to synchronous."""

    name = "replica-commit"
    system = "replica"
    title = "Commit latency: async, semi-sync, wait for the replica"
    writes: int = 3000
    seconds: float = 3.0

    @classmethod
    def quick(cls) -> CommitCost:
        return cls(writes=800, seconds=1.5)

    async def run(self, bench: Bench) -> Outcome:
        rows = []
        for label, replicas, semisync, wait in (
            ("no replica", 0, False, False),
            ("async, 1 replica", 1, False, False),
            ("semi-sync, 1 replica", 1, True, False),
            ("async + wait until applied", 1, False, True),
        ):
            with bench.progress(label, total=self.writes) as advance:
                async with cluster(replicas, semisync=semisync) as c:
                    rows.append({"replication": label, **await self._measure(c, wait, advance)})
        return Outcome(
            rows,
            chart=Chart("replication", ["p50 (ms)", "p99 (ms)"]),
            notes=[SHARED_CPU],
        )

    async def _measure(self, c: Cluster, wait: bool, advance: Callable[[], None]) -> Row:
        ids = itertools.count(1)
        replica = await sql.connect(c.app["db2"]) if wait else None
        try:
            async with sql.Database(c.primary, max_size=8) as db:

                async def one() -> None:
                    async with db.session() as s:
                        await s.execute("INSERT INTO bench.events VALUES (%s, 'x')", (next(ids),))
                        if replica is not None:
                            gtid = await s.fetchval("SELECT @@last_gtid")
                            await replica.fetchval("SELECT MASTER_GTID_WAIT(%s, 10)", (gtid,))

                for _ in range(50):
                    await one()
                latency = Latency()
                for _ in range(self.writes):
                    with latency.time():
                        await one()
                    advance()
                done, end = 0, perf_counter() + self.seconds

                async def loop() -> None:
                    nonlocal done
                    while perf_counter() < end:
                        await one()
                        done += 1

                if replica is None:
                    await asyncio.gather(*(loop() for _ in range(8)))
                else:
                    await loop()  # one session to the replica: the waits take turns
        finally:
            if replica is not None:
                await replica.close()
        summary = latency.summary(percentiles=(50, 99))
        return {
            "p50 (ms)": summary["p50 (ms)"],
            "p99 (ms)": summary["p99 (ms)"],
            "writes/s, 8 writers": round(done / self.seconds) if replica is None else "-",
        }


# -- read throughput ------------------------------------------------------------------


@register
@dataclass
class ReadScaling(Experiment):
    """Reads through the router with 0, 1 and 2 replicas: 16 tasks each run a query that
    scans one group of bench.items (1,000 rows of 100 bytes) for a few seconds."""

    name = "replica-reads"
    system = "replica"
    title = "Read throughput with 0, 1 and 2 replicas"
    seconds: float = 5.0
    tasks: int = 16

    @classmethod
    def quick(cls) -> ReadScaling:
        return cls(seconds=2.0)

    async def run(self, bench: Bench) -> Outcome:
        rows = []
        async with cluster(2, items=100_000) as c:
            for replicas in (0, 1, 2):
                nodes = {name: url for name, url in c.app.items() if name <= f"db{1 + replicas}"}
                with bench.progress(f"{replicas} replicas", total=None):
                    rows.append(await self._measure(nodes, replicas))
        return Outcome(rows, chart=Chart("replicas", ["reads/s"]), notes=[SHARED_CPU])

    async def _measure(self, nodes: dict[str, str], replicas: int) -> Row:
        latency, done = Latency(), 0
        async with Router(nodes, max_size=self.tasks) as router:
            end = perf_counter() + self.seconds

            async def loop(k: int) -> None:
                nonlocal done
                grp = k
                while perf_counter() < end:
                    start = perf_counter_ns()
                    await router.fetchval(
                        "SELECT SUM(LENGTH(payload)) FROM bench.items WHERE grp = %s", (grp % 100,)
                    )
                    latency.record(perf_counter_ns() - start)
                    done += 1
                    grp += self.tasks

            await asyncio.gather(*(loop(k) for k in range(self.tasks)))
            spread = dict(router.stats.reads)
        return {
            "replicas": replicas,
            "reads/s": round(done / self.seconds),
            "p50 (ms)": latency.percentile_ms(50),
            "p99 (ms)": latency.percentile_ms(99),
            "served by": ", ".join(f"{name} {count}" for name, count in sorted(spread.items())),
        }


# -- read-your-writes -----------------------------------------------------------------


@register
@dataclass
class ReadYourWrites(Experiment):
    """A client writes a row, then at once reads it back: from a replica as it is (which
    may not have it yet), from a replica after MASTER_GTID_WAIT on the write's GTID (the
    router's causal read), and from the primary. 4 clients at once."""

    name = "replica-ryw"
    system = "replica"
    title = "The cost of read-your-writes"
    rounds: int = 2000

    @classmethod
    def quick(cls) -> ReadYourWrites:
        return cls(rounds=500)

    async def run(self, bench: Bench) -> Outcome:
        rows = []
        ids = itertools.count(1)
        async with cluster(1) as c, Router(c.app, wait_timeout=1.0, max_size=8) as router:
            for label in ("replica, as it is", "replica, causal (GTID wait)", "primary"):
                with bench.progress(label, total=self.rounds * 4) as advance:
                    rows.append(await self._measure(router, label, ids, advance))
        return Outcome(
            rows, chart=Chart("read", ["read p50 (ms)", "read p99 (ms)"]), notes=[SHARED_CPU]
        )

    async def _measure(
        self, router: Router, label: str, ids: Any, advance: Callable[[], None]
    ) -> Row:
        reads, stale, before = Latency(), 0, sum(router.stats.fallbacks.values())

        async def client() -> None:
            nonlocal stale
            for _ in range(self.rounds):
                i = next(ids)
                written = await router.execute("INSERT INTO bench.events VALUES (%s, 'x')", (i,))
                query, params = "SELECT COUNT(*) FROM bench.events WHERE id = %s", (i,)
                start = perf_counter_ns()
                if label == "primary":
                    count = (await router.fetch_primary(query, params))[0][0]
                elif label.startswith("replica, causal"):
                    count = await router.fetchval(query, params, after=written.gtid)
                else:
                    count = await router.fetchval(query, params)
                reads.record(perf_counter_ns() - start)
                stale += count == 0
                advance()

        await asyncio.gather(*(client() for _ in range(4)))
        fell_back = sum(router.stats.fallbacks.values()) - before
        return {
            "read": label,
            "read p50 (ms)": reads.percentile_ms(50),
            "read p99 (ms)": reads.percentile_ms(99),
            "stale reads": stale,
            "sent to the primary instead": fell_back if label != "primary" else "-",
        }


# -- failover loss --------------------------------------------------------------------


@register
@dataclass
class FailoverLoss(Experiment):
    """4 writers insert rows through the router; the primary is SIGKILLed and the most
    advanced replica promoted. Counted: the writes the router reported committed, and
    those missing on the new primary. Twice: with the replicas connected, and with their
    IO threads stopped for 0.5 s before the crash (a network partition, a replica
    restarting), asynchronous beside semi-sync."""

    name = "replica-failover"
    system = "replica"
    title = "Acknowledged writes lost by a failover"
    rounds: int = 3
    seconds: float = 1.0

    @classmethod
    def quick(cls) -> FailoverLoss:
        return cls(rounds=1)

    async def run(self, bench: Bench) -> Outcome:
        rows = []
        for semisync in (False, True):
            for cut in (False, True):
                label = ("semi-sync" if semisync else "async") + (
                    ", replicas cut off 0.5 s before" if cut else ", replicas connected"
                )
                totals = {"acknowledged": 0, "lost": 0, "failed": 0, "failover (s)": 0.0}
                with bench.progress(label, total=self.rounds) as advance:
                    for _ in range(self.rounds):
                        for key, value in (await self._round(semisync, cut)).items():
                            totals[key] += value
                        advance()
                rows.append(
                    {
                        "replication": label,
                        "rounds": self.rounds,
                        "acknowledged writes": totals["acknowledged"],
                        "lost": totals["lost"],
                        "writes refused or cut": totals["failed"],
                        "failover (s)": round(totals["failover (s)"] / self.rounds, 2),
                    }
                )
        return Outcome(
            rows,
            chart=Chart("replication", ["lost"], ylabel="acknowledged writes lost"),
            notes=[
                "Lost: acknowledged as committed to the writer, not on the new primary. "
                "Semi-sync acknowledges a commit only once a replica has it (AFTER_SYNC), so "
                "with the replicas cut off its writers waited instead (up to the 10 s "
                "timeout, after which it would have turned asynchronous)."
            ],
        )

    async def _round(self, semisync: bool, cut: bool) -> dict[str, Any]:
        async with cluster(2, semisync=semisync) as c, Router(c.app, check_interval=0.1) as router:
            stop, ids = asyncio.Event(), itertools.count()
            writers = [asyncio.create_task(_write_until(router, stop, ids)) for _ in range(4)]
            await asyncio.sleep(self.seconds)
            if cut:
                for name in ("db2", "db3"):
                    async with setup.admin(c.nodes[name]) as s:
                        await s.execute("STOP SLAVE IO_THREAD")
                await asyncio.sleep(0.5)
            c.servers[0].kill()
            started = perf_counter()
            topology = await failover(c.nodes)
            took = perf_counter() - started
            await asyncio.sleep(0.5)
            stop.set()
            results = await asyncio.gather(*writers)
            primary = topology.primary
            assert primary is not None
            async with setup.admin(primary.url) as s:
                stored = {row[0] for row in await s.fetch("SELECT id FROM bench.events")}
        acknowledged = set().union(*(done for done, _ in results))
        return {
            "acknowledged": len(acknowledged),
            "lost": len(acknowledged - stored),
            "failed": sum(failed for _, failed in results),
            "failover (s)": took,
        }

    def headline(self, rows: list[Row]) -> Headline | None:
        semisync = [r for r in rows if r["replication"].startswith("semi-sync")]
        return Headline(
            "acknowledged writes lost by a failover, semi-sync (any replica state)",
            sum(r["lost"] for r in semisync),
            target=0,
        )


async def _write_until(router: Router, stop: asyncio.Event, ids: Any) -> tuple[set[int], int]:
    done, failed = set(), 0
    while not stop.is_set():
        i = next(ids)
        try:
            await router.execute("INSERT INTO bench.events VALUES (%s, 'x')", (i,))
            done.add(i)
        except PrimaryUnavailable:
            failed += 1
            await asyncio.sleep(0.01)
    return done, failed


EXPERIMENTS: tuple[type[Experiment], ...] = (
    ReplicationLag,
    CommitCost,
    ReadScaling,
    ReadYourWrites,
    FailoverLoss,
)
