"""A lock on one Redis server: `SET key token NX PX ttl`, and Lua for the rest.

    lock = RedisLock(redis.from_url(url), "invoice-42", ttl=10, timeout=5)
    async with lock:                      # LockTimeout if not acquired within 5 s
        await charge(customer, fence=lock.fence)

Failure modes, as redis-py's Lock documents its own:

- The holder stalls (GC pause, SIGSTOP, a slow disk) past `ttl`: the key expires and
  someone else acquires. The stalled holder does not know until it tries to extend or
  release, which raise LockLost. Work it did meanwhile may overlap the new holder's:
  pass `fence` to the resource you protect and let it refuse stale tokens
  (`sdlab.locks.FencedStore`).
- The connection drops while held: the lock stays until `ttl` runs out, then frees
  itself. A crashed holder never blocks others for longer than `ttl`.
- Redis restarts without persistence: the lock (and the fencing counter) are gone.
  Use Redlock over several servers, or persistence, if that matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import weakref
from collections.abc import Awaitable
from typing import Any, ClassVar

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from sdlab.locks.lock import Lock, LockError, LockLost

logger = logging.getLogger("sdlab.locks")

# Take the lock and, in the same atomic step, the next fencing token.
ACQUIRE = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return redis.call('incr', KEYS[2])
end
return false
"""
# Only the owner (the holder of the random token) may delete or extend.
RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""
EXTEND = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
# Raise the fencing counter to at least ARGV[1] (used by Redlock: see redlock.py).
RAISE_FENCE = """
local current = tonumber(redis.call('get', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then
    redis.call('set', KEYS[1], ARGV[1])
end
return 1
"""


def keys(name: str) -> list[str]:
    """The lock's key and its fencing counter. The hash tag keeps both in one cluster
    slot, so the acquire script may touch both."""
    return [f"sdlab:lock:{{{name}}}", f"sdlab:lock:{{{name}}}:fence"]


class Scripts:
    """The four scripts, registered on one client (EVALSHA, falling back to EVAL).
    Made once per client (`Scripts.of`), not once per lock."""

    _registered: ClassVar[weakref.WeakKeyDictionary[Redis, Scripts]] = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, client: Redis) -> Scripts:
        scripts = cls._registered.get(client)
        if scripts is None:
            scripts = cls._registered[client] = cls(client)
        return scripts

    def __init__(self, client: Redis) -> None:
        self.client = client
        self.acquire: AsyncScript = client.register_script(ACQUIRE)
        self.release: AsyncScript = client.register_script(RELEASE)
        self.extend: AsyncScript = client.register_script(EXTEND)
        self.raise_fence: AsyncScript = client.register_script(RAISE_FENCE)


class RedisLock(Lock):
    """A lock on one Redis server, with an owner token, a TTL and a fencing token.

    ttl: seconds the lock lives unless extended; a crashed holder frees it after this.
    timeout: default wait in `acquire()` / `async with` (None: for ever).
    auto_renew: while held, extend the TTL every ttl/3 seconds in the background, so a
        long critical section keeps the lock while its process is alive. If a renewal
        finds the lock gone, `lost` is set and leaving `async with` raises LockLost.
    """

    def __init__(
        self,
        client: Redis,
        name: str,
        *,
        ttl: float = 10.0,
        timeout: float | None = None,
        auto_renew: bool = False,
    ) -> None:
        super().__init__(name, timeout=timeout)
        if ttl <= 0:
            raise ValueError(f"ttl must be positive, got {ttl}")
        self.ttl = ttl
        self.auto_renew = auto_renew
        self.token = ""
        self.lost = asyncio.Event()
        self.valid_until = 0.0  # monotonic: the lock is ours at least until then
        self._keys = keys(name)
        self._scripts = Scripts.of(client)
        self._renewer: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None

    @property
    def held(self) -> bool:
        """Held, and certainly not expired: False once `valid_until` has passed."""
        return self._held and not self.lost.is_set() and time.monotonic() < self.valid_until

    def __repr__(self) -> str:
        state = f"held, fence {self.fence}" if self.held else "free"
        return f"<RedisLock {self.name!r} {state}>"

    async def extend(self, ttl: float | None = None) -> None:
        """Reset the lock's TTL to `ttl` (default: the lock's). LockLost if not ours."""
        if not self._held:
            raise LockError(f"lock {self.name!r} is not held by this object")
        ttl = self.ttl if ttl is None else ttl
        started = time.monotonic()
        try:  # an answer after the lock expired is no use: wait no longer than that
            async with asyncio.timeout(max(0.0, self.valid_until - started)):
                done = await self._scripts.extend(
                    keys=self._keys[:1], args=[self.token, milliseconds(ttl)]
                )
        except TimeoutError:
            self._lose()
            raise LockLost(
                f"lock {self.name!r}: extend() got no answer before it expired"
            ) from None
        if not done:
            self._lose()
            raise LockLost(f"lock {self.name!r} had expired or changed hands before extend()")
        self._valid_until(started + ttl)

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        lost = self.lost.is_set()
        await super().__aexit__(exc_type, exc, tb)
        if lost and exc is None:
            raise LockLost(
                f"lock {self.name!r} was lost while held (it expired, or a renewal found it gone)"
            )

    async def _try_acquire(self) -> bool:
        token = secrets.token_hex(16)
        started = time.monotonic()
        try:  # a late answer leaves little of the TTL: half of it is the most we wait
            async with asyncio.timeout(self.ttl / 2):
                fence = await self._scripts.acquire(
                    keys=self._keys, args=[token, milliseconds(self.ttl)]
                )
        except BaseException as exc:
            # Cancelled, timed out or failed after sending: the server may have granted
            # it. Undo with our token, whatever happens to this task.
            cleanup(self._scripts.release(keys=self._keys[:1], args=[token]))
            if isinstance(exc, TimeoutError):
                return False
            raise
        if fence is None:
            return False
        self.token, self.fence = token, int(fence)
        self.lost.clear()
        self._valid_until(started + self.ttl)
        if self.auto_renew:
            self._renewer = asyncio.create_task(self._renew(), name=f"renew lock {self.name}")
        return True

    async def _release(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        await self._stop_renewing()
        released = await self._scripts.release(keys=self._keys[:1], args=[self.token])
        if not released:
            raise LockLost(
                f"lock {self.name!r} had expired or changed hands before release(); "
                "work done under it may have overlapped another holder's"
            )

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.extend()
            except LockLost:
                logger.warning("lock %r: lost while held (renewal found it gone)", self.name)
                return
            except Exception as exc:  # the server is unreachable: keep trying while valid
                if time.monotonic() >= self.valid_until:
                    logger.warning("lock %r: could not renew before expiry: %s", self.name, exc)
                    self._lose()
                    return
                await asyncio.sleep(min(0.05, self.ttl / 10))

    async def _stop_renewing(self) -> None:
        if self._renewer is not None and self._renewer is not asyncio.current_task():
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        self._renewer = None

    def _lose(self) -> None:
        self.lost.set()

    def _valid_until(self, deadline: float) -> None:
        """Record how long the lock is certainly ours, and mark it lost at that moment
        unless it is extended first (a holder cut off from Redis learns it in time)."""
        self.valid_until = deadline
        if self._expiry is not None:
            self._expiry.cancel()
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_at(loop.time() + deadline - time.monotonic(), self._expire)

    def _expire(self) -> None:
        if self._held and time.monotonic() >= self.valid_until:
            logger.warning("lock %r: expired while held", self.name)
            self.lost.set()


_cleanups: set[asyncio.Task[Any]] = set()


def cleanup(request: Awaitable[Any]) -> None:
    """Run `request` to the end in the background, even if the task that started it is
    cancelled (the undo of a half-made acquisition must not be cancelled with it)."""

    async def run() -> None:
        with contextlib.suppress(Exception):
            await request

    task = asyncio.get_running_loop().create_task(run())
    _cleanups.add(task)
    task.add_done_callback(_cleanups.discard)


def milliseconds(seconds: float) -> int:
    """A TTL for PX / PEXPIRE: whole milliseconds, at least 1."""
    return max(1, int(seconds * 1000))
