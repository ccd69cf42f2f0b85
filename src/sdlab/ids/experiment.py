"""The ids experiments: generator throughput beside other libraries, and the seed's
three storage experiments (the simple generator's save interval, UUID vs auto-increment
keys as a table grows, LIMIT/OFFSET vs cursor pagination, two ways to upsert).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import snowflake as snowflake_id
import ulid
import uuid6

from sdlab import sql
from sdlab.bench import Bench, Chart, Experiment, Headline, Outcome, Row, register
from sdlab.bench.seed import published
from sdlab.ids.central import BatchClient, CounterTable
from sdlab.ids.simple import SimpleGenerator
from sdlab.ids.snowflake import Snowflake
from sdlab.ids.tickets import TicketServers


@asynccontextmanager
async def scratch_database(url: str, size: int = 8) -> AsyncIterator[sql.Database]:
    """A database of its own on the MariaDB at `url`, dropped afterwards; a pool on it."""
    async with (
        sql.scratch_database(url, prefix="sdlab_ids") as scratch,
        sql.Database(scratch, isolation=None, min_size=size, max_size=size, timeout=600) as db,
    ):
        yield db


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("nan")


@register
@dataclass
class Throughput(Experiment):
    """Ids per second from each generator, one process: ours (Snowflake one at a time and
    in batches, the seed's simple generator, the central service with batches, Flickr's
    ticket servers), beside the snowflake-id, python-ulid and uuid6 packages."""

    name = "ids-throughput"
    system = "ids"
    title = "Ids per second, per generator"
    services = ("mysql",)

    ids: int = 1_000_000
    server_ids: int = 5_000  # for generators that ask a server for every id
    rounds: int = 3  # local generators: best of this many, interleaved

    @classmethod
    def quick(cls) -> Self:
        return cls(ids=100_000, server_ids=1_000, rounds=2)

    async def run(self, bench: Bench) -> Outcome:
        url = bench.endpoint("mysql").url
        rows: list[dict[str, Any]] = []

        with tempfile.TemporaryDirectory() as state:
            batcher = Snowflake(2)
            simple = SimpleGenerator(4, Path(state) / "counter", save_every=1000)
            generators: dict[str, Callable[[], object]] = {
                "sdlab Snowflake.next_id()": Snowflake(1).next_id,
                "sdlab Snowflake, threadsafe=True": Snowflake(5, threadsafe=True).next_id,
                "snowflake-id SnowflakeGenerator": snowflake_id.SnowflakeGenerator(3).__next__,
                "python-ulid ULID()": ulid.ULID,
                "uuid6 uuid7()": uuid6.uuid7,
                "uuid4 (standard library)": uuid.uuid4,
                "sdlab simple, K = 1,000, fsync": simple.next_id,
            }
            best: dict[str, float] = {}
            total = self.rounds * (len(generators) + 1) * self.ids
            with bench.progress("local generators", total=total) as advance:
                for _ in range(self.rounds):
                    for label, make in generators.items():
                        start = time.perf_counter()
                        for _ in range(self.ids):
                            make()
                        elapsed = time.perf_counter() - start
                        best[label] = min(best.get(label, elapsed), elapsed)
                        advance(self.ids)
                    start = time.perf_counter()
                    batcher.next_ids(self.ids)
                    elapsed = time.perf_counter() - start
                    label = "sdlab Snowflake.next_ids(n)"
                    best[label] = min(best.get(label, elapsed), elapsed)
                    advance(self.ids)
            rows += [_row(label, self.ids, seconds) for label, seconds in best.items()]

        async with scratch_database(url, size=2) as db:
            table = CounterTable(db)
            await table.create()
            client = BatchClient(lambda n: table.allocate("bench", n), batch=1000)
            with bench.progress("central, batches of 1,000", total=None):
                start = time.perf_counter()
                for _ in range(self.ids):
                    await client.next_id()
                rows.append(
                    _row("sdlab central, batches of 1,000", self.ids, time.perf_counter() - start)
                )
            await client.close()
        tickets = TicketServers(
            [sql.with_database(url, f"sdlab_bench_tickets_{i}") for i in (1, 2)]
        )
        await tickets.create()
        with bench.progress("ticket servers", total=self.server_ids) as advance:
            start = time.perf_counter()
            for _ in range(self.server_ids):
                await tickets.next_id()
                advance()
            rows.append(
                _row(
                    "sdlab ticket servers (a round trip each)",
                    self.server_ids,
                    time.perf_counter() - start,
                )
            )
        await tickets.close()

        reference = next(r for r in rows if r["generator"].startswith("snowflake-id"))
        for row in rows:
            row["vs snowflake-id"] = row["ids/s"] / reference["ids/s"]
        return Outcome(
            rows,
            chart=Chart(x="generator", y=["ids/s"], ylabel="ids per second (log scale)", logy=True),
            notes=[
                f"{self.ids:,} ids per local generator ({self.server_ids:,} for the ticket "
                "servers), one process, one thread.",
                f"Local generators: best of {self.rounds} rounds, interleaved, each id from "
                "one call (a bound method, no wrapper). Snowflake in batches is bounded by "
                "its layout: 4,096 ids per millisecond per machine id, 4.1 M/s.",
                "snowflake-id returns None when a millisecond's 4,096 ids are spent or the "
                "clock steps back; sdlab's Snowflake waits for the next millisecond, or "
                "raises ClockMovedBackwards.",
                "The ticket servers here are two databases on one local MariaDB: each id is "
                "a REPLACE INTO and a SELECT on one connection.",
            ],
        )

    def headline(self, rows: list[Row]) -> Headline | None:
        ours = next(r for r in rows if r["generator"] == "sdlab Snowflake.next_id()")
        return Headline(
            "Snowflake.next_id() ids/s / snowflake-id's",
            ours["vs snowflake-id"],
            unit="x",
            target=1.0,
            better="higher",
        )


def _row(label: str, count: int, seconds: float) -> dict[str, Any]:
    return {"generator": label, "ids": count, "seconds": seconds, "ids/s": _rate(count, seconds)}


@register
@dataclass
class SaveInterval(Experiment):
    """The seed's simple generator (epoch ms + machine id + counter) making ids one at a
    time, its counter reserved on disk every K ids: with fsync (survives a power cut) and
    without (survives a process crash only)."""

    name = "ids-simple"
    system = "ids"
    title = "Simple generator: counter saved every K ids"
    services = ()

    counts: tuple[int, ...] = (1_000_000, 10_000_000)
    intervals: tuple[int, ...] = (100, 500, 1000, 10_000)

    @classmethod
    def quick(cls) -> Self:
        return cls(counts=(200_000,))

    async def run(self, bench: Bench) -> Outcome:
        seed = published("ids-simple")
        rows = []
        with tempfile.TemporaryDirectory() as state:
            for count in self.counts:
                for k in self.intervals:
                    times = {}
                    for durable in (True, False):
                        label = f"{count:,} ids, K={k:,}, {'fsync' if durable else 'no fsync'}"
                        with bench.progress(label, total=None):
                            path = Path(state) / f"{count}-{k}-{durable}"
                            generator = SimpleGenerator(5, path, save_every=k, durable=durable)
                            next_id = generator.next_id
                            start = time.perf_counter()
                            for _ in range(count):
                                next_id()
                            times[durable] = (time.perf_counter() - start) * 1000
                    rows.append(
                        {
                            "ids": count,
                            "K": k,
                            "saves": generator.saves,
                            "time, fsync (ms)": times[True],
                            "time, no fsync (ms)": times[False],
                            "seed: time (ms)": seed.lookup("time (ms)", ids=count, K=k),
                        }
                    )
        return Outcome(
            rows,
            chart=Chart(
                x="K",
                y=["time, fsync (ms)", "time, no fsync (ms)", "seed: time (ms)"],
                kind="line",
                logx=True,
                logy=True,
                group="ids",
                ylabel="ms to make the ids (log scale)",
            ),
            published=seed,
            notes=[
                "A save writes the reserved counter to a temporary file and renames it into "
                "place; with fsync, the file and its directory are flushed to disk first.",
                "The chart draws one line per count of ids and series, the seed's beside ours.",
            ],
        )

    def headline(self, rows: list[Row]) -> Headline | None:
        count = max(r["ids"] for r in rows)
        ms = {r["K"]: r["time, fsync (ms)"] for r in rows if r["ids"] == count}
        rarest, most = max(ms), min(ms)  # saves every `most` ids cost the most
        seed = published("ids-simple")
        seed_count = count if seed.lookup("time (ms)", ids=count, K=most) else 1_000_000
        seed_ms = [seed.lookup("time (ms)", ids=seed_count, K=k) for k in (most, rarest)]
        return Headline(
            f"{count:,} ids, fsync: time at K={most:,} / at K={rarest:,}",
            ms[most] / ms[rarest],
            unit="x",
            seed=seed_ms[0] / seed_ms[1] if None not in seed_ms else None,
            seed_note=f"{seed_count:,} ids" if None not in seed_ms else "",
        )


@register
@dataclass
class KeyGrowth(Experiment):
    """Insert time as a table grows, for three primary keys: auto-increment BIGINT,
    random UUIDv4 in BINARY(16), and time-ordered UUIDv7 in BINARY(16). Rows go in over
    pooled connections, in multi-row INSERTs."""

    name = "ids-uuid-pk"
    system = "ids"
    title = "UUID vs auto-increment primary key as the table grows"
    services = ("mysql",)

    rounds: int = 5
    rows_per_round: int = 200_000
    connections: int = 16
    rows_per_insert: int = 500

    @classmethod
    def quick(cls) -> Self:
        return cls(rounds=3, rows_per_round=30_000)

    async def run(self, bench: Bench) -> Outcome:
        seed = published("uuid-vs-autoincrement")
        keys = {
            "auto-increment": ("id BIGINT AUTO_INCREMENT PRIMARY KEY", None),
            "UUIDv4": ("id BINARY(16) PRIMARY KEY", lambda: uuid.uuid4().bytes),
            "UUIDv7": ("id BINARY(16) PRIMARY KEY", lambda: uuid6.uuid7().bytes),
        }
        seconds: dict[str, list[float]] = {k: [] for k in keys}
        async with scratch_database(bench.endpoint("mysql").url, self.connections) as db:
            for key, (column, _) in keys.items():
                table = key.replace("-", "_").lower()
                await db.execute(
                    f"CREATE TABLE {table} ({column}, payload VARCHAR(100) NOT NULL) ENGINE=InnoDB",
                )
            total = self.rounds * self.rows_per_round * len(keys)
            with bench.progress("inserting", total=total) as advance:
                for _ in range(self.rounds):
                    for key, (_, make) in keys.items():
                        table = key.replace("-", "_").lower()
                        seconds[key].append(await self._insert(db, table, make, advance))
        rows = []
        for i in range(self.rounds):
            rows.append(
                {
                    "rows before": i * self.rows_per_round,
                    **{f"{key} (s)": seconds[key][i] for key in keys},
                    "UUIDv4 / auto-increment": seconds["UUIDv4"][i] / seconds["auto-increment"][i],
                }
            )
        return Outcome(
            rows,
            chart=Chart(
                x="rows before",
                y=[f"{key} (s)" for key in keys],
                kind="line",
                ylabel=f"seconds to insert {self.rows_per_round:,} rows",
            ),
            published=seed,
            notes=[
                f"Each round inserts {self.rows_per_round:,} rows per table over "
                f"{self.connections} pooled connections, {self.rows_per_insert} rows per "
                "INSERT; the tables grow round by round. The seed inserted 1 M rows a round "
                "into tables of 1 to 5 M; `sdlab ids experiment --seed-sizes` repeats that size.",
                "A random key lands anywhere in the clustered index, so once the index "
                "outgrows the buffer pool nearly every insert reads a page from disk; "
                "auto-increment and UUIDv7 append at the right edge.",
            ],
        )

    def headline(self, rows: list[Row]) -> Headline | None:
        last = rows[-1]
        seed = published("uuid-vs-autoincrement").as_rows()[-1]
        return Headline(
            f"UUIDv4 / auto-increment insert time, {last['rows before']:,} rows before",
            last["UUIDv4 / auto-increment"],
            unit="x",
            seed=seed["UUID (s)"] / seed["auto-increment (s)"],
            seed_note=f"{seed['rows before (M)']} M rows before",
        )

    async def _insert(
        self, db: sql.Database, table: str, make: Callable[[], bytes] | None, advance: Any
    ) -> float:
        batches = self.rows_per_round // self.rows_per_insert
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(batches):
            queue.put_nowait(i)

        async def worker() -> None:
            async with db.session() as session:
                while not queue.empty():
                    queue.get_nowait()
                    payload = "x" * 100
                    if make is None:
                        statement = f"INSERT INTO {table} (payload) VALUES " + ",".join(
                            ["(%s)"] * self.rows_per_insert
                        )
                        args: list[Any] = [payload] * self.rows_per_insert
                    else:
                        statement = f"INSERT INTO {table} (id, payload) VALUES " + ",".join(
                            ["(%s, %s)"] * self.rows_per_insert
                        )
                        args = [v for _ in range(self.rows_per_insert) for v in (make(), payload)]
                    await session.execute(statement, args)
                    advance(self.rows_per_insert)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(self.connections)))
        return time.perf_counter() - start


async def _fill(db: sql.Database, table: str, rows: int) -> None:
    """`rows` rows with ids 1..rows, made inside the server (the sequence engine)."""
    await db.execute(
        f"CREATE TABLE {table} (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
        "k BIGINT NOT NULL UNIQUE, payload VARCHAR(100) NOT NULL) ENGINE=InnoDB",
    )
    step = 500_000
    for first in range(1, rows + 1, step):
        last = min(rows, first + step - 1)
        await db.execute(
            f"INSERT INTO {table} (k, payload) SELECT seq, REPEAT('x', 100) "
            f"FROM seq_{first}_to_{last}",
        )


@register
@dataclass
class Pagination(Experiment):
    """Reading one page of 100 rows deep into a table: LIMIT/OFFSET makes the server walk
    and throw away every row before the offset; a cursor (`WHERE id > last`) seeks
    straight to it through the primary key."""

    name = "ids-pagination"
    system = "ids"
    title = "LIMIT/OFFSET vs cursor pagination"
    services = ("mysql",)

    rows: int = 1_200_000
    page: int = 100
    repeats: int = 5

    @classmethod
    def quick(cls) -> Self:
        return cls(rows=200_000, repeats=3)

    async def run(self, bench: Bench) -> Outcome:
        seed = published("pagination")
        offsets = [0, self.rows // 6, self.rows // 2, self.rows * 5 // 6]
        rows = []
        async with scratch_database(bench.endpoint("mysql").url, 2) as db:
            with bench.progress(f"filling {self.rows:,} rows", total=None):
                await _fill(db, "pages", self.rows)
            with bench.progress("paging", total=len(offsets)) as advance:
                for offset in offsets:
                    by_offset = await self._median(
                        db, f"SELECT * FROM pages ORDER BY id LIMIT {self.page} OFFSET {offset}"
                    )
                    by_cursor = await self._median(
                        db,
                        f"SELECT * FROM pages WHERE id > {offset} ORDER BY id LIMIT {self.page}",
                    )
                    rows.append(
                        {
                            "offset": offset,
                            "LIMIT/OFFSET (ms)": by_offset,
                            "cursor id > last (ms)": by_cursor,
                            "ratio": by_offset / by_cursor,
                        }
                    )
                    advance()
        return Outcome(
            rows,
            chart=Chart(
                x="offset",
                y=["LIMIT/OFFSET (ms)", "cursor id > last (ms)"],
                kind="line",
                logy=True,
                ylabel="ms per page (log scale)",
            ),
            published=seed,
            notes=[
                f"A page is {self.page} rows; each time is the median of {self.repeats} "
                f"queries on a {self.rows:,}-row table (the seed: 6 M rows, and it read 1 M "
                "rows per LIMIT/OFFSET batch against 100 per cursor batch, so its columns "
                "do not compare row for row; here both read the same page).",
            ],
        )

    def headline(self, rows: list[Row]) -> Headline | None:
        deepest = rows[-1]
        seed = published("pagination").as_rows()[-1]
        offset_ms, cursor_ms = (seed[c] for c in published("pagination").columns[1:])
        return Headline(
            f"LIMIT/OFFSET / cursor, offset {deepest['offset']:,}",
            deepest["ratio"],
            unit="x",
            seed=offset_ms / cursor_ms,
            seed_note="1 M-row vs 100-row batches",
        )

    async def _median(self, db: sql.Database, query: str) -> float:
        times = []
        for _ in range(self.repeats):
            start = time.perf_counter()
            await db.fetch(query)
            times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times)


@register
@dataclass
class Upsert(Experiment):
    """Upserting random existing rows: `INSERT ... ON DUPLICATE KEY UPDATE` changes the
    row in place; `REPLACE INTO` deletes it and inserts a new one (a new auto-increment
    id, every secondary index touched twice)."""

    name = "ids-upsert"
    system = "ids"
    title = "ON DUPLICATE KEY UPDATE vs REPLACE INTO"
    services = ("mysql",)

    rows: int = 1_200_000
    upserts: int = 10_000
    connections: int = 50

    @classmethod
    def quick(cls) -> Self:
        return cls(rows=200_000, upserts=2_000, connections=20)

    async def run(self, bench: Bench) -> Outcome:
        seed = published("upsert")
        statements = {
            "INSERT ... ON DUPLICATE KEY UPDATE": (
                "INSERT INTO t (k, payload) VALUES (%s, %s) "
                "ON DUPLICATE KEY UPDATE payload = VALUES(payload)"
            ),
            "REPLACE INTO": "REPLACE INTO t (k, payload) VALUES (%s, %s)",
        }
        rows = []
        async with scratch_database(bench.endpoint("mysql").url, self.connections) as db:
            with bench.progress(f"filling {self.rows:,} rows", total=None):
                await _fill(db, "t", self.rows)
            for label, statement in statements.items():
                keys = random.sample(range(1, self.rows + 1), self.upserts)
                before = await db.fetchval("SELECT MAX(id) FROM t")
                with bench.progress(label, total=self.upserts) as advance:
                    elapsed, deadlocks = await self._upsert(db, statement, keys, advance)
                moved = await db.fetchval("SELECT COUNT(*) FROM t WHERE id > %s", (before,))
                rows.append(
                    {
                        "statement": label,
                        "time (ms)": elapsed * 1000,
                        "upserts/s": self.upserts / elapsed,
                        "rows given new ids": int(moved),
                        "deadlocks (run again)": deadlocks,
                        "seed: time (ms)": seed.lookup("time (ms)", statement=_seed_label(label)),
                    }
                )
        return Outcome(
            rows,
            chart=Chart(
                x="statement",
                y=["time (ms)", "seed: time (ms)"],
                ylabel="ms (log scale)",
                logy=True,
            ),
            published=seed,
            notes=[
                f"{self.upserts:,} upserts of random existing keys in a {self.rows:,}-row "
                f"table over {self.connections} pooled connections, one statement each; a "
                "statement chosen as a deadlock's victim is run again, and counted.",
            ],
        )

    def headline(self, rows: list[Row]) -> Headline | None:
        ms = {r["statement"]: r["time (ms)"] for r in rows}
        seed = {r["statement"]: r["time (ms)"] for r in published("upsert").as_rows()}
        return Headline(
            "REPLACE INTO / ON DUPLICATE KEY UPDATE time",
            ms["REPLACE INTO"] / ms["INSERT ... ON DUPLICATE KEY UPDATE"],
            unit="x",
            seed=seed["REPLACE INTO"] / seed["INSERT ... ON DUPLICATE KEY UPDATE"],
            seed_note="6 M rows",
        )

    async def _upsert(
        self, db: sql.Database, statement: str, keys: list[int], advance: Any
    ) -> tuple[float, int]:
        """The time to upsert every key over the pool, and the deadlocks met on the way.
        Concurrent REPLACEs (a delete and an insert, each locking index gaps) deadlock
        now and then; InnoDB rolls the victim's statement back whole, so it is run again."""
        queue = list(keys)
        deadlocks = 0

        async def worker() -> None:
            nonlocal deadlocks
            async with db.session() as session:
                while queue:
                    key = queue.pop()
                    while True:
                        try:
                            await session.execute(statement, (key, "y" * 100))
                            break
                        except sql.Deadlock:
                            deadlocks += 1
                    advance()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(self.connections)))
        return time.perf_counter() - start, deadlocks


def _seed_label(label: str) -> str:
    return label  # the seed's table names the statements as we do


ALL: list[type[Experiment]] = [Throughput, SaveInterval, KeyGrowth, Pagination, Upsert]


def seed_sizes() -> list[Experiment]:
    """The storage experiments at the seed's sizes (6 M-row tables; 1 M rows a round)."""
    return [
        KeyGrowth(rounds=6, rows_per_round=1_000_000, connections=50),
        Pagination(rows=6_000_000),
        Upsert(rows=6_000_000),
    ]
