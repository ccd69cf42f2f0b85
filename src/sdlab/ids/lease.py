"""Machine ids leased from Redis, so two generators never share one.

    lease = await MachineLease.acquire(redis_client, service="orders")
    ids = Snowflake(lease.check)       # raises LockLost once the lease may have expired

A lease is a `sdlab.locks.RedisLock` on `ids:<service>:machine:<n>`, renewed every
ttl/3 while the process (and its event loop) lives. A crashed process frees its id
after `ttl`. `check()` refuses to vouch for the id once the lease may have expired,
even if the renewal simply had no chance to run (a blocked event loop).

A machine id changing hands is also a time hazard: if the new holder's clock is behind
the old one's, it would make the same (time, machine, sequence) again. So each holder
records, at every renewal and at release, a horizon: the latest wall-clock millisecond
it may still use. A new holder waits until its own clock is past that horizon plus
`max_clock_skew` before it vouches for the id (Leaf records the last timestamp in
ZooKeeper for the same reason).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Any

from sdlab.locks import LockLost, RedisLock

logger = logging.getLogger("sdlab.ids")


class NoMachineId(RuntimeError):
    """Every machine id of the service is leased."""


class MachineLease:
    def __init__(self, client: Any, lock: RedisLock, machine: int, service: str) -> None:
        self.client = client
        self.lock = lock
        self.machine = machine
        self.horizon_key = f"ids:{service}:machine:{machine}:horizon"
        self._renewer: asyncio.Task[None] | None = None

    @classmethod
    async def acquire(
        cls,
        client: Any,
        *,
        service: str = "snowflake",
        machines: int = 1024,
        ttl: float = 30.0,
        max_clock_skew: float = 0.1,
    ) -> MachineLease:
        """Lease a free machine id in 0..machines-1 (trying from a random one). Returns
        once this machine's clock is past the previous holder's horizon plus
        `max_clock_skew` seconds."""
        first = random.randrange(machines)
        for i in range(machines):
            machine = (first + i) % machines
            lock = RedisLock(client, f"ids:{service}:machine:{machine}", ttl=ttl)
            if await lock.acquire(blocking=False):
                lease = cls(client, lock, machine, service)
                await lease._wait_past_previous_holder(max_clock_skew)
                await lease._record_horizon(ttl)
                lease._renewer = asyncio.create_task(lease._renew(), name=f"lease {machine}")
                return lease
        raise NoMachineId(f"all {machines} machine ids of {service!r} are leased")

    def check(self) -> int:
        """The machine id, if the lease is certainly still ours; else LockLost."""
        if not self.lock.held:
            raise LockLost(
                f"the lease on machine id {self.machine} ({self.lock.name}) may have expired; "
                "stop making ids with it"
            )
        return self.machine

    async def release(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        if self.lock.held:
            with contextlib.suppress(Exception):
                await self._record_horizon(0)  # the last millisecond we may have used
            await self.lock.release()

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.lock.ttl / 3)
            try:
                await self.lock.extend()
                await self._record_horizon(self.lock.ttl)
            except LockLost:
                logger.warning("machine id lease %s lost", self.machine)
                return
            except Exception as exc:  # Redis unreachable: the lock's own timer marks it lost
                logger.warning("machine id lease %s: renewal failed: %s", self.machine, exc)

    async def _record_horizon(self, ahead: float) -> None:
        horizon = time.time_ns() // 1_000_000 + int(ahead * 1000)
        await self.client.set(self.horizon_key, horizon, ex=7 * 24 * 3600)

    async def _wait_past_previous_holder(self, max_clock_skew: float) -> None:
        value = await self.client.get(self.horizon_key)
        if value is None:
            return
        wait = (int(value) + max_clock_skew * 1000 - time.time_ns() / 1_000_000) / 1000
        if wait > self.lock.ttl / 3:
            # The previous holder's horizon is far ahead of our clock: a bigger skew
            # than we may wait out while holding the lock. Give it back and say so.
            await self.lock.release()
            raise LockLost(
                f"machine id {self.machine}: the previous holder may have used times up to "
                f"{wait:.1f} s ahead of this machine's clock; is the clock right?"
            )
        if wait > 0:
            logger.info(
                "machine id %s: waiting %.3f s past the previous holder", self.machine, wait
            )
            await asyncio.sleep(wait)
