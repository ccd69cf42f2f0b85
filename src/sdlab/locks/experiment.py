"""What a lock costs: ours beside redis-py's Lock, python-redis-lock and pottery's Redlock.

One client taking and releasing a free lock, over and over (latency), then 8 tasks
fighting over one lock for a few seconds (throughput). Redlock runs on 5 private Redis
servers; the single-server locks on the usual Redis.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any, Self

import redis as sync_redis
import redis_lock
from pottery import AIORedlock
from redis.asyncio.lock import Lock as RedisPyLock

from sdlab import infra
from sdlab.bench import Bench, Chart, Experiment, Latency, Outcome, register
from sdlab.infra.services import redis
from sdlab.locks.redis_lock import RedisLock
from sdlab.locks.redlock import Redlock
from sdlab.locks.sql_locks import MariaDBLock, PostgresLock

Cycle = Callable[[], Awaitable[None]]  # acquire, then release, one lock object
OpenCycle = Callable[[dict[str, Any], str], AbstractAsyncContextManager[Cycle]]


@dataclass(frozen=True)
class Contender:
    lock: str
    servers: str
    make: OpenCycle
    """An async context manager factory: (connections, lock name) -> cycle()."""
    concurrent: bool = True  # False for sync libraries: no contended run


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
        fresh(lambda c, n: AIORedlock(key=n, masters=c["quorum"], auto_release_time=10)),
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
    tasks: int = 8
    seconds: float = 3.0

    @classmethod
    def quick(cls) -> Self:
        return cls(cycles=300, seconds=1.0)

    async def run(self, bench: Bench) -> Outcome:
        urls = {s: bench.endpoint(s).url for s in self.services}
        rows = []
        with infra.redis(5, durable=True) as quorum_servers:
            async with AsyncExitStack() as stack:
                conns: dict[str, Any] = {
                    "redis": redis.connect(urls["redis"]),
                    "redis_url": urls["redis"],
                    "quorum": [redis.connect(s.url) for s in quorum_servers],
                    "mysql_url": urls["mysql"],
                    "postgres_url": urls["postgres"],
                }
                stack.push_async_callback(conns["redis"].aclose)
                for client in conns["quorum"]:
                    stack.push_async_callback(client.aclose)
                total = len(CONTENDERS) * self.cycles
                with bench.progress("one client: acquire + release", total=total) as advance:
                    for contender in CONTENDERS:
                        rows.append(await self._measure(contender, conns, advance))
        reference = next(r for r in rows if r["lock"] == "redis-py Lock")
        single = next(r for r in rows if r["lock"] == "sdlab RedisLock")
        for row in rows:
            row["p50 / redis-py"] = row["p50 (ms)"] / reference["p50 (ms)"]
        redlock = next(r for r in rows if r["lock"] == "sdlab Redlock")
        serial = next(r for r in rows if r["lock"].startswith("Redlock, servers asked"))
        return Outcome(
            rows,
            chart=Chart(x="lock", y=["p50 (ms)", "p99 (ms)"], ylabel="ms per acquire + release"),
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
            ],
        )

    async def _measure(
        self, contender: Contender, conns: dict[str, Any], advance: Any
    ) -> dict[str, Any]:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        latency = Latency()
        async with contender.make(conns, name) as cycle:
            for _ in range(20):
                await cycle()
            for _ in range(self.cycles):
                began = perf_counter_ns()
                await cycle()
                latency.record(perf_counter_ns() - began)
                advance()
            contended = await self._contend(cycle) if contender.concurrent else None
        return {
            "lock": contender.lock,
            "servers": contender.servers,
            "p50 (ms)": latency.percentile_ms(50),
            "p99 (ms)": latency.percentile_ms(99),
            f"{self.tasks} tasks: acquisitions/s": contended,
        }

    async def _contend(self, cycle: Cycle) -> float:
        done = 0
        deadline = time.monotonic() + self.seconds

        async def task() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                await cycle()
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(task() for _ in range(self.tasks)))
        return done / (time.monotonic() - started)
