"""Machine ids leased from Redis, so two generators never share one.

    lease = await MachineLease.acquire(redis_client, service="orders")
    ids = Snowflake(lease.check)       # raises LockLost once the lease is gone

A lease is a `sdlab.locks.RedisLock` on `ids:<service>:machine:<n>`, renewed in the
background every ttl/3 while the process (and its event loop) lives. A crashed process
frees its id after `ttl`. `check()` refuses to vouch for the id once the lease may have
expired, even if the renewal simply had no chance to run (a blocked event loop).
"""

from __future__ import annotations

import random
import time
from typing import Any

from sdlab.locks import LockLost, RedisLock


class NoMachineId(RuntimeError):
    """Every machine id of the service is leased."""


class MachineLease:
    def __init__(self, lock: RedisLock, machine: int) -> None:
        self.lock = lock
        self.machine = machine

    @classmethod
    async def acquire(
        cls, client: Any, *, service: str = "snowflake", machines: int = 1024, ttl: float = 30.0
    ) -> MachineLease:
        """Lease a free machine id in 0..machines-1 (trying from a random one)."""
        first = random.randrange(machines)
        for i in range(machines):
            machine = (first + i) % machines
            lock = RedisLock(client, f"ids:{service}:machine:{machine}", ttl=ttl, auto_renew=True)
            if await lock.acquire(blocking=False):
                return cls(lock, machine)
        raise NoMachineId(f"all {machines} machine ids of {service!r} are leased")

    def check(self) -> int:
        """The machine id, if the lease is certainly still ours; else LockLost."""
        if self.lock.lost.is_set() or time.monotonic() >= self.lock.valid_until:
            raise LockLost(
                f"the lease on machine id {self.machine} ({self.lock.name}) may have expired; "
                "stop making ids with it"
            )
        return self.machine

    async def release(self) -> None:
        if self.lock.held:
            await self.lock.release()
