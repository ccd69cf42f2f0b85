"""The generators behind `sdlab ids gen` and the HTTP service: one source per kind of id
(per service, for `central`), made on first use from the registry in `kinds.py`.

    generators = Generators(state_dir, mysql_url=..., redis_url=...)
    await generators.make("snowflake", 5)           # five ids, as ints
    await generators.texts("ulid", 2)               # ['01M8XQGYTJZJA6ZX8HK67E41B7', ...]
    await generators.make("central", 3, service="orders")
    await generators.close()

`make` gives every kind's ids as integers (they sort in the order made, where the kind
is ordered); `texts` gives each kind's canonical text: decimal for the 64-bit kinds and
the counters, 26 characters of Crockford base32 for ULIDs, `xxxxxxxx-xxxx-7xxx-...` for
UUIDv7s.

Server-backed kinds reach their servers at the given URLs; a snowflake or simple
machine id is leased from Redis unless `machine` is set. If the lease is lost, the call
that finds out raises `LockLost` and the next one leases a machine id anew.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import redis.asyncio as aioredis

from sdlab.ids.kinds import KINDS, Source
from sdlab.ids.layout import InvalidId
from sdlab.ids.lease import MachineLease
from sdlab.locks import LockLost

T = TypeVar("T")


@dataclass
class Generators:
    """One source of each kind of id, made on first use; `close()` ends them all."""

    state_dir: Path
    mysql_url: str = ""
    postgres_url: str = ""
    redis_url: str = ""
    machine: int | None = None
    ticket_urls: list[str] = field(default_factory=list)
    batch: int = 1000
    _made: dict[str, asyncio.Task[Any]] = field(default_factory=dict)
    _closers: list[Callable[[], Awaitable[object]]] = field(default_factory=list)

    async def make(self, kind: str, count: int, *, service: str = "default") -> list[int]:
        """`count` new ids of `kind` (for `central`: from the counter of `service`)."""
        if kind not in KINDS:
            raise InvalidId(f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
        chosen = KINDS[kind]
        key = f"{kind}:{service}" if chosen.per_service else kind

        async def open_source(generators: Generators) -> Source:
            return await chosen.open(generators, service)

        source = await self.shared(key, open_source)
        try:
            return await source(count)
        except LockLost:  # the next request leases anew, and rebuilds what used the lease
            self._forget("lease", *(k for k, v in KINDS.items() if "machine" in v.needs))
            raise

    async def texts(self, kind: str, count: int, *, service: str = "default") -> list[str]:
        """`count` new ids of `kind` in its canonical text (see `kinds.Kind.text`)."""
        return KINDS[kind].texts(await self.make(kind, count, service=service))

    async def close(self) -> None:
        for close in reversed(self._closers):
            await close()
        self._made.clear()
        self._closers.clear()

    # -- what the kinds build on (see kinds.py) --------------------------------------

    async def shared(self, key: str, build: Callable[[Generators], Coroutine[Any, Any, T]]) -> T:
        """The thing called `key`, built by `build(self)` once even if many requests ask
        at once (a build may itself ask for another key)."""
        if key not in self._made:
            # Built in a task of its own: a caller that gives up does not cancel the
            # build for the others waiting on it.
            task: asyncio.Task[T] = asyncio.get_running_loop().create_task(build(self))
            self._made[key] = task

            def forget_failure(done: asyncio.Future[Any]) -> None:
                if done.cancelled() or done.exception() is not None:
                    self._made.pop(key, None)  # the next request tries again

            task.add_done_callback(forget_failure)
        result: T = await asyncio.shield(self._made[key])
        return result

    def on_close(self, close: Callable[[], Awaitable[object]]) -> None:
        """Run `close()` at `close()`, after what was built later than it."""
        self._closers.append(close)

    async def lease(self) -> MachineLease:
        """The machine id leased from Redis for this process."""
        return await self.shared("lease", _lease)

    async def machine_id(self) -> int:
        """The machine id given, else the leased one."""
        if self.machine is not None:
            return self.machine
        return (await self.lease()).machine

    async def check_lease(self) -> None:
        """`LockLost` if the machine id was leased and the lease is gone."""
        if self.machine is None:
            (await self.lease()).check()

    def _forget(self, *keys: str) -> None:
        for key in keys:
            self._made.pop(key, None)


async def _lease(generators: Generators) -> MachineLease:
    client = aioredis.from_url(generators.redis_url)
    lease = await MachineLease.acquire(client)
    generators.on_close(client.aclose)
    generators.on_close(lease.release)
    return lease
