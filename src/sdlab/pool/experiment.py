"""Why pool connections: the seed's experiment, and sdlab.pool beside its peers.

- `pool`: N tasks at once each run `SELECT SLEEP(0.01)` on MariaDB, first with a new
  connection per task (the server's real `max_connections` applies), then through a
  pool of 10. The floor for the pool is N x 10 ms / 10: ten connections, each busy
  10 ms per task.
- `pool-peers`: the same pooled workload through asyncmy's own pool and SQLAlchemy's
  QueuePool on MariaDB, and through psycopg_pool on PostgreSQL (`pg_sleep(0.01)`),
  each beside sdlab.pool on the same server.
- `pool-acquire`: the pool's own cost, with no query: one task borrowing and giving
  back in a loop, then 100 tasks sharing 10 connections (every borrow a hand-over).
"""

from __future__ import annotations

import asyncio
import gc
import statistics
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any, Self

import asyncmy
import psycopg_pool
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from sdlab.bench import Bench, Chart, Experiment, Headline, Latency, Outcome, Row, register
from sdlab.bench.seed import published
from sdlab.failure import describe
from sdlab.infra.services import mariadb
from sdlab.pool import MariaDB, Pool, PostgreSQL

SLEEP_MS = 10
MARIADB_SLEEP = "SELECT SLEEP(0.01)"
POSTGRES_SLEEP = "SELECT pg_sleep(0.01)"
WAIT = 600.0  # acquire timeout for every pool here: 10,000 tasks queue for ~10 s


@dataclass(frozen=True)
class Borrowing:
    """A warmed-up pool under test, seen through the two things every pool does."""

    connection: Callable[[], AbstractAsyncContextManager[Any]]
    """Borrow a connection for the `async with` block."""
    sleep: Callable[[Any], Awaitable[object]]
    """Run the 10 ms sleep on a borrowed connection."""

    async def query(self) -> None:
        async with self.connection() as conn:
            await self.sleep(conn)


OpenPool = Callable[[str, int], AbstractAsyncContextManager[Borrowing]]


async def _mariadb_sleep(conn: asyncmy.Connection) -> None:
    async with conn.cursor() as cur:
        await cur.execute(MARIADB_SLEEP)


async def _postgres_sleep(conn: Any) -> None:
    await conn.execute(POSTGRES_SLEEP)


@asynccontextmanager
async def sdlab_mariadb(url: str, size: int) -> AsyncIterator[Borrowing]:
    async with Pool(MariaDB(url, autocommit=True), min_size=size, timeout=WAIT) as pool:
        yield Borrowing(pool.connection, _mariadb_sleep)


@asynccontextmanager
async def bare_queue(url: str, size: int) -> AsyncIterator[Borrowing]:
    """The least a pool can be: `size` connections in an asyncio.Queue (FIFO, no checks,
    no reconnects, no limits). The yardstick for what the real pools' features cost."""
    conns = [await mariadb.connect(url, autocommit=True) for _ in range(size)]
    queue: asyncio.Queue[asyncmy.Connection] = asyncio.Queue()
    for conn in conns:
        queue.put_nowait(conn)

    @asynccontextmanager
    async def connection() -> AsyncIterator[asyncmy.Connection]:
        conn = await queue.get()
        try:
            yield conn
        finally:
            queue.put_nowait(conn)

    try:
        yield Borrowing(connection, _mariadb_sleep)
    finally:
        for conn in conns:
            await conn.ensure_closed()


@asynccontextmanager
async def asyncmy_pool(url: str, size: int) -> AsyncIterator[Borrowing]:
    pool = await asyncmy.create_pool(
        minsize=size, maxsize=size, autocommit=True, **mariadb.connect_args(url)
    )
    try:
        yield Borrowing(pool.acquire, _mariadb_sleep)
    finally:
        pool.close()
        await pool.wait_closed()


@asynccontextmanager
async def sqlalchemy_pool(url: str, size: int) -> AsyncIterator[Borrowing]:
    engine = create_async_engine(
        make_url(url).set(drivername="mysql+asyncmy"),
        pool_size=size,
        max_overflow=0,
        pool_timeout=WAIT,
        isolation_level="AUTOCOMMIT",
    )

    async def sleep(conn: Any) -> None:
        await conn.exec_driver_sql(MARIADB_SLEEP)

    try:
        yield Borrowing(engine.connect, sleep)
    finally:
        await engine.dispose()


@asynccontextmanager
async def sdlab_postgres(url: str, size: int) -> AsyncIterator[Borrowing]:
    async with Pool(PostgreSQL(url, autocommit=True), min_size=size, timeout=WAIT) as pool:
        yield Borrowing(pool.connection, _postgres_sleep)


@asynccontextmanager
async def psycopg_pool_(url: str, size: int) -> AsyncIterator[Borrowing]:
    pool = psycopg_pool.AsyncConnectionPool(
        url, min_size=size, max_size=size, timeout=WAIT, kwargs={"autocommit": True}, open=False
    )
    await pool.open(wait=True)
    try:
        yield Borrowing(pool.connection, _postgres_sleep)
    finally:
        await pool.close()


@dataclass(frozen=True)
class Contender:
    pool: str
    service: str  # "mysql" or "postgres"
    open: OpenPool

    @property
    def label(self) -> str:
        return f"{self.pool} ({'MariaDB' if self.service == 'mysql' else 'PostgreSQL'})"


CONTENDERS = [
    Contender("asyncio.Queue, bare", "mysql", bare_queue),
    Contender("sdlab.pool", "mysql", sdlab_mariadb),
    Contender("asyncmy.create_pool", "mysql", asyncmy_pool),
    Contender("SQLAlchemy QueuePool", "mysql", sqlalchemy_pool),
    Contender("sdlab.pool", "postgres", sdlab_postgres),
    Contender("psycopg_pool", "postgres", psycopg_pool_),
]


@asynccontextmanager
async def opened(bench: Bench, size: int) -> AsyncIterator[dict[Contender, Borrowing]]:
    """Every contender's pool, open and warm: `size` connections each, all made."""
    async with AsyncExitStack() as stack:
        pools = {}
        for contender in CONTENDERS:
            borrowing = await stack.enter_async_context(
                contender.open(bench.endpoint(contender.service).url, size)
            )
            # Hold `size` connections at once, so lazy pools (SQLAlchemy) open them all.
            await asyncio.gather(*(borrowing.query() for _ in range(size)))
            pools[contender] = borrowing
        yield pools


def repeats(n: int) -> int:
    """Timed runs of N tasks: best of 3 up to N = 1,000 (a second or so each), of 2
    above, so that one hiccup of a shared machine is not taken for the pool's cost."""
    return 3 if n <= 1000 else 2


async def best_of(work: Callable[[], Awaitable[object]], n: int, advance: Any) -> float:
    """`gather_timed`, `repeats(n)` times after a garbage collection each; the best."""
    times = []
    for _ in range(repeats(n)):
        gc.collect()
        times.append(await gather_timed(work, n, advance))
    return min(times)


async def gather_timed(work: Callable[[], Awaitable[object]], n: int, advance: Any) -> float:
    """Run `work` n times at once; milliseconds until the last one is done."""

    async def one() -> object:
        try:
            return await work()
        finally:
            advance()

    start = perf_counter_ns()
    results = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
    elapsed = (perf_counter_ns() - start) / 1e6
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise failures[0]
    return elapsed


def _error_text(exc: BaseException) -> str:
    """'Too many connections (1040)' for a server error, else a short description."""
    args = exc.args
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
        return f"{args[1]} ({args[0]})"
    return describe(exc)


async def unpooled(url: str, n: int, advance: Any) -> tuple[float, Counter[str]]:
    """N tasks at once, each opening its own connection: (ms, errors by message)."""

    async def one() -> None:
        try:
            conn = await mariadb.connect(url, autocommit=True)
            try:
                await _mariadb_sleep(conn)
            finally:
                await conn.ensure_closed()
        finally:
            advance()

    start = perf_counter_ns()
    results = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
    elapsed = (perf_counter_ns() - start) / 1e6
    return elapsed, Counter(_error_text(r) for r in results if isinstance(r, BaseException))


async def _server_variable(url: str, name: str) -> Any:
    conn = await mariadb.connect(url)
    try:
        async with conn.cursor() as cur:
            await cur.execute(f"SELECT @@{name}")
            (value,) = await cur.fetchone()
            return value
    finally:
        await conn.ensure_closed()


async def _threads_connected(url: str) -> int:
    """Connections the server has open, besides the one asking."""
    conn = await mariadb.connect(url)
    try:
        async with conn.cursor() as cur:
            await cur.execute("SHOW GLOBAL STATUS LIKE 'Threads_connected'")
            (_, connected) = await cur.fetchone()
            return int(connected) - 1
    finally:
        await conn.ensure_closed()


async def _settle(url: str, baseline: int, timeout: float = 10.0) -> None:
    """Wait (up to `timeout`) until the server has let go of the last run's connections:
    back to `baseline`, give or take a few other clients coming and going."""
    try:
        async with asyncio.timeout(timeout):
            while await _threads_connected(url) > baseline + 2:  # noqa: ASYNC110 (polls a server)
                await asyncio.sleep(0.05)
    except TimeoutError:
        pass  # a busy shared server: go on; the no-pool errors column will show it


async def _sequential_ms(url: str, queries: int, advance: Any) -> float:
    """Milliseconds per SELECT SLEEP(0.01), run back to back on one connection."""
    conn = await mariadb.connect(url, autocommit=True)
    try:
        await _mariadb_sleep(conn)  # warm
        start = perf_counter_ns()
        for _ in range(queries):
            await _mariadb_sleep(conn)
            advance()
        return (perf_counter_ns() - start) / 1e6 / queries
    finally:
        await conn.ensure_closed()


@register
@dataclass
class PoolVersusNoPool(Experiment):
    """N tasks at once each run SELECT SLEEP(0.01) on MariaDB: with a new connection per
    task, against the server's real max_connections, and through a pool of 10
    (sdlab.pool). The pool's floor is N x 10 ms / 10."""

    name = "pool"
    system = "pool"
    title = "Connection pool vs a connection per task"
    services = ("mysql",)

    tasks: tuple[int, ...] = (10, 100, 200, 500, 1000, 10_000)
    size: int = 10
    sequential: int = 200  # queries run back to back on one connection, for the floor

    @classmethod
    def quick(cls) -> Self:
        return cls(tasks=(10, 100, 200, 500), sequential=50)

    async def run(self, bench: Bench) -> Outcome:
        url = bench.endpoint("mysql").url
        seed = published("connection-pool")
        max_connections = await _server_variable(url, "max_connections")
        baseline = await _threads_connected(url)  # other clients of this server
        rows = []
        with bench.progress("one connection, back to back", total=self.sequential) as advance:
            per_query = await _sequential_ms(url, self.sequential, advance)
        for n in self.tasks:
            # The pool is open only for its own runs: its connections must not take
            # places under max_connections from the no-pool run.
            await _settle(url, baseline)
            with bench.progress(f"N={n:,}: a connection per task", total=n) as advance:
                bare_ms, errors = await unpooled(url, n, advance)
            await _settle(url, baseline)
            async with sdlab_mariadb(url, self.size) as pool:
                await asyncio.gather(*(pool.query() for _ in range(self.size)))
                with bench.progress(
                    f"N={n:,}: pool of {self.size}", total=n * repeats(n)
                ) as advance:
                    pooled_ms = await best_of(pool.query, n, advance)
            floor = n * SLEEP_MS / self.size
            rows.append(
                {
                    "N": n,
                    # Like the seed's table: a time only where every task did its work.
                    "no pool (ms)": None if errors else bare_ms,
                    "no pool: failed tasks": _failures(errors, n, bare_ms),
                    f"pool of {self.size} (ms)": pooled_ms,
                    "floor (ms)": floor,
                    "pool / floor": pooled_ms / floor,
                    "pool / measured floor": pooled_ms / (n * per_query / self.size),
                    "seed: no pool (ms)": seed.lookup("no pool (ms)", N=n),
                    "seed: pool of 10 (ms)": seed.lookup("pool of 10 (ms)", N=n),
                }
            )
        notes = [
            "Pool column: best of 3 runs up to N = 1,000, of 2 above. No pool: one run.",
            f"Measured floor: one connection running SELECT SLEEP(0.01) back to back takes "
            f"{per_query:.2f} ms a query (the server's sleep overshoots, and there is a round "
            f"trip); N/{self.size} of those is the best {self.size} connections can do.",
            f"The server's max_connections is {max_connections}: past it, tasks without a "
            "pool fail, and the no-pool column shows how many and how fast instead of a time.",
        ]
        if large := [r for r in rows if r["N"] >= 100]:
            worst = max(large, key=lambda r: r["pool / floor"])
            seed_ratio = seed.lookup("pool of 10 (ms)", N=10_000) / (10_000 * SLEEP_MS / 10)
            notes.append(
                f"The pool stays within {worst['pool / floor']:.2f}x of its floor for "
                f"N >= 100 (worst at N={worst['N']:,}); the seed's pool reached "
                f"{seed_ratio:.1f}x at N=10,000."
            )
        return Outcome(
            rows,
            chart=Chart(
                x="N",
                y=[
                    "no pool (ms)",
                    f"pool of {self.size} (ms)",
                    "floor (ms)",
                    "seed: pool of 10 (ms)",
                ],
                kind="line",
                ylabel="ms until all N tasks are done",
                logx=True,
                logy=True,
            ),
            published=seed,
            notes=notes,
        )

    def headline(self, rows: list[Row]) -> Headline | None:
        large = [r for r in rows if r["N"] >= 100] or rows
        worst = max(large, key=lambda r: r["pool / floor"])
        largest = max(rows, key=lambda r: r["N"])
        seed_ms = published("connection-pool").lookup("pool of 10 (ms)", N=largest["N"])
        return Headline(
            f"pool of {self.size}: worst time / floor, N >= 100",
            worst["pool / floor"],
            unit="x",
            target=1.15,  # NOTES.md: the pool's target
            seed=seed_ms / largest["floor (ms)"] if isinstance(seed_ms, int | float) else None,
            seed_note=f"N={largest['N']:,}",
        )


def _failures(errors: Counter[str], n: int, ms: float) -> str:
    if not errors:
        return "none"
    message, _ = errors.most_common(1)[0]
    return f"{sum(errors.values()):,} of {n:,} in {ms:,.0f} ms: {message}"


@register
@dataclass
class PoolPeers(Experiment):
    """The pooled workload (N tasks, 10 connections, a 10 ms sleep each) through
    sdlab.pool, asyncmy's pool and SQLAlchemy's QueuePool on MariaDB, and through
    sdlab.pool and psycopg_pool on PostgreSQL. Each cell is the time over the floor
    N x 10 ms / 10; 1.00 is perfect."""

    name = "pool-peers"
    system = "pool"
    title = "Pools side by side: time over the floor"
    services = ("mysql", "postgres")

    tasks: tuple[int, ...] = (100, 1000, 10_000)
    size: int = 10

    @classmethod
    def quick(cls) -> Self:
        return cls(tasks=(100, 1000))

    async def run(self, bench: Bench) -> Outcome:
        times: dict[Contender, dict[int, float]] = {c: {} for c in CONTENDERS}
        async with opened(bench, self.size) as pools:
            for n in self.tasks:
                for contender, borrowing in pools.items():
                    with bench.progress(
                        f"N={n:,}: {contender.label}", total=n * repeats(n)
                    ) as advance:
                        times[contender][n] = await best_of(borrowing.query, n, advance)
        rows = []
        for contender, by_n in times.items():
            row: dict[str, Any] = {"pool": contender.label}
            for n, ms in by_n.items():
                row[f"N={n:,}: x floor"] = ms / (n * SLEEP_MS / self.size)
            for n, ms in by_n.items():
                row[f"N={n:,} (ms)"] = ms
            rows.append(row)
        return Outcome(
            rows,
            chart=Chart(
                x="pool",
                y=[f"N={n:,}: x floor" for n in self.tasks],
                ylabel="time / floor (bars rise from 1.0 = perfect)",
                baseline=1.0,
            ),
            notes=[
                f"Every pool holds exactly {self.size} connections (min = max), opened and "
                "warmed before timing, autocommit on. Best of 3 runs up to N = 1,000, of 2 "
                "above; a garbage collection before each.",
                "asyncio.Queue, bare: the connections in a queue and nothing else, the "
                "yardstick for what each pool's checks and bookkeeping cost.",
            ],
        )

    def headline(self, rows: list[Row]) -> Headline | None:
        n = max(self.tasks)
        ours = next(r for r in rows if r["pool"] == "sdlab.pool (MariaDB)")
        return Headline(
            f"sdlab.pool on MariaDB: time / floor, N={n:,}",
            ours[f"N={n:,}: x floor"],
            unit="x",
            target=1.15,
        )


@register
@dataclass
class AcquireRelease(Experiment):
    """What a pool costs by itself: borrow a connection and give it back, with no query.
    One task in a loop (the fast path: an idle connection is always there), then 100
    tasks sharing 10 connections, each holding its connection across one event-loop
    turn (every borrow waits for a hand-over). Best of several interleaved rounds."""

    name = "pool-acquire"
    system = "pool"
    title = "Acquire + release, no query"
    services = ("mysql", "postgres")

    ops: int = 50_000
    rounds: int = 5
    tasks: int = 100
    size: int = 10

    @classmethod
    def quick(cls) -> Self:
        return cls(ops=5_000, rounds=3)

    async def run(self, bench: Bench) -> Outcome:
        solo: dict[Contender, list[float]] = {c: [] for c in CONTENDERS}
        shared: dict[Contender, list[float]] = {c: [] for c in CONTENDERS}
        latency = {c: Latency() for c in CONTENDERS}
        waits = {c: Latency() for c in CONTENDERS}
        total = self.rounds * len(CONTENDERS) * 2 * self.ops
        async with opened(bench, self.size) as pools:
            with bench.progress("acquire + release", total=total) as advance:
                for _ in range(self.rounds):
                    for contender, borrowing in pools.items():
                        solo[contender].append(
                            await _solo(borrowing, self.ops, latency[contender], advance)
                        )
                        shared[contender].append(
                            await _shared(
                                borrowing, self.ops, self.tasks, waits[contender], advance
                            )
                        )
        reference = next(c for c in CONTENDERS if c.pool == "psycopg_pool")
        rows = []
        for contender in CONTENDERS:
            best_solo, best_shared = min(solo[contender]), min(shared[contender])
            rows.append(
                {
                    "pool": contender.label,
                    "1 task (us/op)": best_solo,
                    "1 task: p50 (us)": latency[contender].percentile_ms(50) * 1000,
                    "1 task: p99 (us)": latency[contender].percentile_ms(99) * 1000,
                    f"{self.tasks} tasks (us/op)": best_shared,
                    "1 task / psycopg_pool": best_solo / min(solo[reference]),
                    f"{self.tasks} tasks / psycopg_pool": best_shared / min(shared[reference]),
                    f"{self.tasks} tasks: p99 wait (ms)": waits[contender].percentile_ms(99),
                    f"{self.tasks} tasks: max wait (ms)": waits[contender].max_ms,
                    "spread (median / best)": statistics.median(solo[contender]) / best_solo,
                }
            )
        return Outcome(
            rows,
            chart=Chart(
                x="pool",
                y=["1 task (us/op)", f"{self.tasks} tasks (us/op)"],
                ylabel="microseconds per acquire + release (log scale)",
                logy=True,
            ),
            notes=[
                f"{self.ops:,} acquire + release per round and case, {self.rounds} rounds "
                "interleaved across pools; us/op is the best round's mean.",
                "SQLAlchemy's figure is AsyncEngine.connect() as applications use it: a "
                "Connection object and, on return, the pool's reset-on-return ROLLBACK, "
                "a round trip to the server.",
                "Wait: how long one borrow took among 100 tasks on 10 connections. A FIFO "
                "pool hands each returned connection to the longest waiter, so no borrow "
                "waits much longer than 10 others' turns; a pool that lets the releaser "
                "take it straight back is cheaper per borrow but can starve a waiter.",
            ],
        )

    def headline(self, rows: list[Row]) -> Headline | None:
        ours = next(r for r in rows if r["pool"] == "sdlab.pool (PostgreSQL)")
        return Headline(
            "sdlab.pool / psycopg_pool per borrow, 1 task",
            ours["1 task / psycopg_pool"],
            unit="x",
            target=1.0,
        )


async def _solo(borrowing: Borrowing, ops: int, latency: Latency, advance: Any) -> float:
    """Microseconds per acquire + release, one task in a loop."""
    connection = borrowing.connection
    start = perf_counter_ns()
    for _ in range(ops):
        began = perf_counter_ns()
        async with connection():
            pass
        latency.record(perf_counter_ns() - began)
    elapsed = perf_counter_ns() - start
    advance(ops)
    return elapsed / ops / 1000


async def _shared(
    borrowing: Borrowing, ops: int, tasks: int, waits: Latency, advance: Any
) -> float:
    """Microseconds per acquire + release, `tasks` tasks sharing the pool; how long
    each borrow waited goes into `waits`."""
    connection, each = borrowing.connection, ops // tasks

    async def worker() -> None:
        for _ in range(each):
            lease = connection()
            began = perf_counter_ns()
            await lease.__aenter__()
            waits.record(perf_counter_ns() - began)
            try:
                await asyncio.sleep(0)
            finally:
                await lease.__aexit__(None, None, None)

    start = perf_counter_ns()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    elapsed = perf_counter_ns() - start
    advance(ops)
    return elapsed / (each * tasks) / 1000
