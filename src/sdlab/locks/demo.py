"""The classic demonstration: processes incrementing a shared counter the unsafe way
(read it, then write it plus one), with and without a lock around the two steps.

Without a lock, increments are lost: two processes read the same value and both write
value + 1. With any of the locks, the final count is exact. `sdlab locks demo` runs this;
the tests run it with 8 processes x 500 increments for every backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.asyncio as aioredis

from sdlab.locks.lock import Lock
from sdlab.locks.redis_lock import RedisLock
from sdlab.locks.redlock import Redlock
from sdlab.locks.sql_locks import MariaDBLock, PostgresLock

BACKENDS = ("none", "redis", "redlock", "mysql", "postgres")


@dataclass(frozen=True)
class Setup:
    """Where the counter lives (Redis) and where each backend's lock lives."""

    backend: str
    redis_url: str
    redlock_urls: Sequence[str] = ()
    mysql_url: str = ""
    postgres_url: str = ""
    name: str = field(default_factory=lambda: f"demo-{uuid.uuid4().hex[:8]}")

    @property
    def counter(self) -> str:
        return f"sdlab:demo:{self.name}:counter"


@asynccontextmanager
async def make_lock(setup: Setup) -> AsyncIterator[Lock | None]:
    """The backend's lock on the demo's name (None for backend "none")."""
    if setup.backend == "none":
        yield None
    elif setup.backend == "redis":
        client = aioredis.from_url(setup.redis_url)
        try:
            yield RedisLock(client, setup.name, ttl=10)
        finally:
            await client.aclose()
    elif setup.backend == "redlock":
        clients = [aioredis.from_url(url) for url in setup.redlock_urls]
        try:
            yield Redlock(clients, setup.name, ttl=10)
        finally:
            for client in clients:
                await client.aclose()
    elif setup.backend in ("mysql", "postgres"):
        lock: MariaDBLock | PostgresLock = (
            MariaDBLock(setup.mysql_url, setup.name)
            if setup.backend == "mysql"
            else PostgresLock(setup.postgres_url, setup.name)
        )
        try:
            yield lock
        finally:
            await lock.close()
    else:
        raise ValueError(f"unknown backend {setup.backend!r}; known: {', '.join(BACKENDS)}")


async def increment(setup: Setup, times: int) -> None:
    """Add one to the counter `times` times, reading and writing it as two commands.
    Says "ready" on stdout once connected, and starts when a line arrives on stdin."""
    counter = aioredis.from_url(setup.redis_url)
    try:
        async with make_lock(setup) as lock:
            await counter.ping()
            print("ready", flush=True)
            await asyncio.to_thread(sys.stdin.readline)
            for _ in range(times):
                async with lock if lock is not None else nullcontext():
                    value = int(await counter.get(setup.counter) or 0)
                    await counter.set(setup.counter, value + 1)
    finally:
        await counter.aclose()


def main(argv: Sequence[str] = sys.argv[1:]) -> None:
    """One worker process: `python -m sdlab.locks.demo '<json>'` (started by `run`)."""
    (spec,) = argv
    args = json.loads(spec)
    asyncio.run(increment(Setup(**args["setup"]), args["times"]))


@dataclass(frozen=True)
class Tally:
    backend: str
    processes: int
    increments: int
    counted: int
    seconds: float

    @property
    def expected(self) -> int:
        return self.processes * self.increments

    @property
    def lost(self) -> int:
        return self.expected - self.counted

    def row(self) -> dict[str, Any]:
        return {
            "lock": self.backend,
            "processes": self.processes,
            "increments": self.expected,
            "counted": self.counted,
            "lost updates": self.lost,
            "seconds": self.seconds,
            "increments/s": self.expected / self.seconds if self.seconds else 0.0,
        }


def run(setup: Setup, processes: int = 8, increments: int = 500) -> Tally:
    """Start `processes` processes that each increment `increments` times under the
    backend's lock, all beginning at the same moment; count what arrived."""
    spec = json.dumps({"setup": asdict(setup), "times": increments})
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "sdlab.locks.demo", spec],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    for worker in workers:  # wait until every one is connected: then start them together
        assert worker.stdout is not None
        worker.stdout.readline()
    started = time.perf_counter()
    for worker in workers:
        assert worker.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # it died: its stderr will say why
            worker.stdin.write("go\n")
            worker.stdin.flush()
    errors = [worker.communicate()[1] for worker in workers]
    seconds = time.perf_counter() - started
    failed = [(w.returncode, e) for w, e in zip(workers, errors, strict=True) if w.returncode]
    if failed:
        code, stderr = failed[0]
        raise RuntimeError(
            f"{len(failed)} of {processes} demo processes failed; one exited {code}:\n{stderr}"
        )
    return Tally(setup.backend, processes, increments, asyncio.run(_read(setup)), seconds)


async def _read(setup: Setup) -> int:
    counter = aioredis.from_url(setup.redis_url)
    try:
        value = int(await counter.get(setup.counter) or 0)
        await counter.delete(setup.counter)
        return value
    finally:
        await counter.aclose()


if __name__ == "__main__":
    main()
