"""What a lock costs: ours beside redis-py's Lock, python-redis-lock and pottery's Redlock.

One client taking and releasing a free lock, over and over (latency), then 8 tasks
fighting over one lock for a few seconds (throughput). Redlock runs on 5 private Redis
servers (durable: every write fsynced, as Redlock asks); the single-server locks on the
usual Redis. Then the two Redlocks again with 1 and 2 of the 5 servers paused (SIGSTOP:
a frozen server holds its connections and answers nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any, Self

import redis as sync_redis
import redis_lock
from pottery import AIORedlock
from redis.asyncio.lock import Lock as RedisPyLock

from sdlab import infra
from sdlab.bench import Bench, Chart, Experiment, Headline, Latency, Outcome, Row, register
from sdlab.infra.services import redis
from sdlab.locks.redis_lock import RedisLock
from sdlab.locks.redlock import Redlock
from sdlab.locks.sql_locks import MariaDBLock, PostgresLock

SERVER_TIMEOUT = 0.05
"""Redlock's wait for one server, and the socket timeout of pottery's clients: without
one, pottery waits for every server, so a paused one hangs it (`_acquire_masters`)."""

Cycle = Callable[[], Awaitable[None]]  # acquire, then release, one lock object
OpenCycle = Callable[[dict[str, Any], str], AbstractAsyncContextManager[Cycle]]


@dataclass(frozen=True)
class Contender:
    lock: str
    servers: str
    make: OpenCycle
    """An async context manager factory: (connections, lock name) -> cycle()."""
    concurrent: bool = True  # False for sync libraries: no contended run
    paused: int = 0  # quorum servers paused (SIGSTOP) while measured


Lock = Any  # an object with async acquire() and release()


def fresh(make: Callable[[dict[str, Any], str], Lock]) -> OpenCycle:
    """Cycles that make a new lock object each time, as a request handler would."""

    @asynccontextmanager
    async def open_cycle(conns: dict[str, Any], name: str) -> AsyncIterator[Cycle]:
        async def cycle() -> None:
            lock = make(conns, name)
            await lock.acquire()
            await lock.release()

        yield cycle

    return open_cycle


def per_task(make: Callable[[dict[str, Any], str], Lock]) -> OpenCycle:
    """Cycles that keep one lock object (one database session) per task, as a user of a
    session lock would; the sessions close at the end."""

    @asynccontextmanager
    async def open_cycle(conns: dict[str, Any], name: str) -> AsyncIterator[Cycle]:
        sessions: dict[Any, Lock] = {}

        async def cycle() -> None:
            task = asyncio.current_task()
            if task not in sessions:
                sessions[task] = make(conns, name)
            await sessions[task].acquire()
            await sessions[task].release()

        try:
            yield cycle
        finally:
            for lock in sessions.values():
                await lock.close()

    return open_cycle


@asynccontextmanager
async def _python_redis_lock(conns: dict[str, Any], name: str) -> AsyncIterator[Cycle]:
    client = sync_redis.Redis.from_url(conns["redis_url"])

    async def cycle() -> None:  # a sync library: it blocks the loop, one client only
        lock = redis_lock.Lock(client, name, expire=10)
        lock.acquire()
        lock.release()

    try:
        yield cycle
    finally:
        client.close()


class OneByOneRedlock(Redlock):
    """The strawman: Redlock asking its servers one after another instead of at once."""

    async def _until_decided(self, call: Any, decided: Any, **undo: Any) -> list[object]:
        answers: list[object] = []
        for scripts in self._scripts:
            try:
                answers.append(await self._bounded(call(scripts)))
            except Exception as exc:
                answers.append(exc)
        return answers


CONTENDERS = [
    Contender("sdlab RedisLock", "1 Redis", fresh(lambda c, n: RedisLock(c["redis"], n, ttl=10))),
    Contender(
        "redis-py Lock", "1 Redis", fresh(lambda c, n: RedisPyLock(c["redis"], n, timeout=10))
    ),
    Contender("python-redis-lock", "1 Redis", _python_redis_lock, concurrent=False),
    Contender("sdlab Redlock", "5 Redis", fresh(lambda c, n: Redlock(c["quorum"], n, ttl=10))),
    Contender(
        "Redlock, servers asked one by one",
        "5 Redis",
        fresh(lambda c, n: OneByOneRedlock(c["quorum"], n, ttl=10)),
    ),
    Contender(
        "pottery AIORedlock",
        "5 Redis",
        fresh(lambda c, n: AIORedlock(key=n, masters=c["timed"], auto_release_time=10)),
    ),
    Contender(
        "sdlab MariaDBLock (GET_LOCK)",
        "MariaDB",
        per_task(lambda c, n: MariaDBLock(c["mysql_url"], n)),
    ),
    Contender(
        "sdlab PostgresLock (advisory)",
        "PostgreSQL",
        per_task(lambda c, n: PostgresLock(c["postgres_url"], n)),
    ),
    *(
        contender
        for paused in (1, 2)
        for contender in (
            Contender(
                f"sdlab Redlock, {paused} of 5 paused",
                "5 Redis",
                fresh(lambda c, n: Redlock(c["quorum"], n, ttl=10, server_timeout=SERVER_TIMEOUT)),
                concurrent=False,
                paused=paused,
            ),
            Contender(
                f"pottery AIORedlock, {paused} of 5 paused",
                "5 Redis",
                fresh(lambda c, n: AIORedlock(key=n, masters=c["timed"], auto_release_time=10)),
                concurrent=False,
                paused=paused,
            ),
        )
    ),
]


@register
@dataclass
class LockCost(Experiment):
    """Acquire + release of a free lock from one client (latency), and 8 tasks contending
    for one lock (acquisitions per second), for our locks and three well-known Python
    ones, on real Redis, MariaDB and PostgreSQL servers."""

    name = "locks"
    system = "locks"
    title = "Lock acquire + release: latency and contention"
    services = ("redis", "mysql", "postgres")

    cycles: int = 3000
    paused_cycles: int = 200  # with servers paused: pottery takes 100 ms a cycle
    tasks: int = 8
    seconds: float = 3.0

    @classmethod
    def quick(cls) -> Self:
        return cls(cycles=300, paused_cycles=20, seconds=1.0)

    async def run(self, bench: Bench) -> Outcome:
        urls = {s: bench.endpoint(s).url for s in self.services}
        rows = []
        with infra.redis(5, durable=True) as quorum_servers:
            async with AsyncExitStack() as stack:
                conns: dict[str, Any] = {
                    "redis": redis.connect(urls["redis"]),
                    "redis_url": urls["redis"],
                    "quorum": [redis.connect(s.url) for s in quorum_servers],
                    "timed": [
                        redis.connect(
                            s.url,
                            socket_timeout=SERVER_TIMEOUT,
                            socket_connect_timeout=SERVER_TIMEOUT,
                        )
                        for s in quorum_servers
                    ],
                    "mysql_url": urls["mysql"],
                    "postgres_url": urls["postgres"],
                }
                stack.push_async_callback(conns["redis"].aclose)
                for client in [*conns["quorum"], *conns["timed"]]:
                    stack.push_async_callback(client.aclose)
                total = sum(self._cycles(c) for c in CONTENDERS)
                with bench.progress("one client: acquire + release", total=total) as advance:
                    for contender in CONTENDERS:
                        with _paused(quorum_servers[: contender.paused]):
                            rows.append(await self._measure(contender, conns, advance))
        reference = next(r for r in rows if r["lock"] == "redis-py Lock")
        single = next(r for r in rows if r["lock"] == "sdlab RedisLock")
        for row in rows:
            row["p50 / redis-py"] = row["p50 (ms)"] / reference["p50 (ms)"]
        redlock = next(r for r in rows if r["lock"] == "sdlab Redlock")
        serial = next(r for r in rows if r["lock"].startswith("Redlock, servers asked"))
        frozen = {r["lock"]: r["p50 (ms)"] for r in rows if "paused" in r["lock"]}
        return Outcome(
            rows,
            chart=Chart(
                x="lock",
                y=["p50 (ms)", "p99 (ms)"],
                ylabel="ms per acquire + release (log scale)",
                logy=True,
            ),
            notes=[
                f"One client: {self.cycles:,} acquire + release of a free lock, a new lock "
                f"object each time. Contended: {self.tasks} asyncio tasks in one process "
                f"on one lock name for {self.seconds:g} s; each library with its own "
                "retry policy (redis-py sleeps 0.1 s between tries, sdlab backs off from "
                "2 ms to 50 ms, the database locks wait in the server).",
                f"Redlock over 5 servers costs {redlock['p50 (ms)'] / single['p50 (ms)']:.1f}x "
                "a single-server lock at p50, against "
                f"{serial['p50 (ms)'] / single['p50 (ms)']:.1f}x when the same code asks the "
                "servers one by one: the requests go out at once, so an acquisition waits "
                "for one round trip, not five. On loopback a round trip is mostly CPU (the "
                "client's and five servers' on two cores), so the gap is far wider across "
                "a network.",
                "python-redis-lock is synchronous: measured for one client only.",
                f"With 2 of 5 servers paused, sdlab Redlock takes "
                f"{frozen['sdlab Redlock, 2 of 5 paused']:.2f} ms at p50 (it decides once a "
                "majority answered; the paused servers' requests time out in the background), "
                f"pottery's {frozen['pottery AIORedlock, 2 of 5 paused']:.1f} ms (it waits for "
                f"every server: {SERVER_TIMEOUT * 1000:g} ms of socket timeout at acquire and "
                f"again at release). The paused rows: {self.paused_cycles:,} cycles each, one "
                "client. Failed cycles: acquire or release raised (for pottery, "
                "ReleaseUnlockedLock when a live server's answer also missed the 50 ms).",
            ],
        )

    def headline(self, rows: list[Row]) -> Headline | None:
        ours = next(r for r in rows if r["lock"] == "sdlab RedisLock")
        return Headline(
            "sdlab RedisLock p50 / redis-py Lock's, one client", ours["p50 / redis-py"], unit="x"
        )

    async def _measure(
        self, contender: Contender, conns: dict[str, Any], advance: Any
    ) -> dict[str, Any]:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        latency = Latency()
        cycles = self._cycles(contender)
        failed = 0
        async with contender.make(conns, name) as cycle:
            for _ in range(min(20, cycles)):
                with contextlib.suppress(Exception):
                    await cycle()
            for _ in range(cycles):
                began = perf_counter_ns()
                try:
                    await cycle()
                except Exception:  # e.g. a release that too few servers confirmed in time
                    failed += 1
                latency.record(perf_counter_ns() - began)
                advance()
            contended = await self._contend(cycle) if contender.concurrent else None
        return {
            "lock": contender.lock,
            "servers": contender.servers,
            "p50 (ms)": latency.percentile_ms(50),
            "p99 (ms)": latency.percentile_ms(99),
            "failed cycles": failed,
            f"{self.tasks} tasks: acquisitions/s": contended,
        }

    def _cycles(self, contender: Contender) -> int:
        return self.paused_cycles if contender.paused else self.cycles

    async def _contend(self, cycle: Cycle) -> float:
        done = 0
        deadline = time.monotonic() + self.seconds

        async def task() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                try:
                    await cycle()
                except Exception:  # counted as not done (pottery: ReleaseUnlockedLock)
                    continue
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(task() for _ in range(self.tasks)))
        return done / (time.monotonic() - started)


@contextlib.contextmanager
def _paused(servers: list[Any]) -> Iterator[None]:
    """SIGSTOP `servers` for the block. Pottery logs every server error with its
    traceback (a timeout each time): quiet while they are paused."""
    quiet = logging.getLogger("pottery")
    level = quiet.level
    if servers:
        quiet.setLevel(logging.CRITICAL)
    for server in servers:
        server.pause()
    try:
        yield
    finally:
        for server in servers:
            server.resume()
        quiet.setLevel(level)
