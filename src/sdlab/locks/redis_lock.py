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
- Redis restarts without persistence: the lock is gone, and another client may take it
  while the first still works under it. Run Redis with `appendonly yes` and
  `appendfsync always` if that matters (Redlock insists on it).

Fencing counters (`<key>:fence`) expire once a lock has been left alone for
`fence_life(ttl)` (a day at least), so that locks named per entity do not grow Redis
without bound. That is safe because a new counter does not start at 0: it starts at
the server's clock in microseconds (`TIME`), which is past every token the old counter
gave out: the old one started at its own clock reading and went up by one per
acquisition, at most one a microsecond (each acquisition is a round trip after the
previous holder's release), so its last token is at most the time it was given; and
it expired at least `fence_life` after that. This holds unless the server's clock has
stepped back by more than `fence_life`; for Redlock, whose token may come from any of
its servers' counters, unless two servers' clocks are that far apart. The same start
keeps tokens growing when a Redis without persistence restarts and forgets a counter.
A counter is never forgotten while its lock lives: `fence_life` is longer than the TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
import weakref
from collections.abc import Awaitable
from typing import Any, ClassVar

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from sdlab.locks.lock import ExpiringLock, LockError, LockLost

# Take the lock and, in the same atomic step, the next fencing token. A missing counter
# (new, expired or forgotten) starts at the server's clock in microseconds: see above.
ACQUIRE = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    if redis.call('exists', KEYS[2]) == 0 then
        local now = redis.call('time')
        redis.call('set', KEYS[2], now[1] .. string.format('%06d', tonumber(now[2])))
    end
    local fence = redis.call('incr', KEYS[2])
    redis.call('pexpire', KEYS[2], ARGV[3])
    return fence
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
    redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
"""

FENCE_LIFE = 24 * 3600.0
"""Seconds a fencing counter outlives the last acquisition of its lock, at least."""


def fence_life(ttl: float) -> int:
    """Milliseconds a lock's fencing counter lives after an acquisition: a day, or ten
    TTLs if longer, so the counter outlives the lock it counts."""
    return milliseconds(max(FENCE_LIFE, 10 * ttl))


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
        self.unsafe: str | None = None
        """Why this server may forget a lock when restarted ("" if it will not; None
        until `check_persistence()` has asked it)."""

    async def check_persistence(self) -> str:
        """Ask the server (CONFIG GET) whether it keeps every write across a restart:
        appendonly yes and appendfsync always. Returns, and remembers, why not ("" if so)."""
        if self.unsafe is None:
            try:
                config = await self.client.config_get("append*")
            except ResponseError as exc:  # CONFIG renamed or refused (managed Redis, ACLs)
                self.unsafe = f"CONFIG GET was refused ({exc}), so its persistence is unknown"
            else:
                found = {_text(k): _text(v) for k, v in config.items()}
                only, sync = found.get("appendonly", "?"), found.get("appendfsync", "?")
                ok = only == "yes" and sync == "always"
                self.unsafe = "" if ok else f"it runs with appendonly {only}, appendfsync {sync}"
        return self.unsafe


class RedisLock(ExpiringLock):
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
        super().__init__(name, ttl=ttl, timeout=timeout, auto_renew=auto_renew)
        self.token = ""
        self._keys = keys(name)
        self._scripts = Scripts.of(client)

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

    async def _try_acquire(self) -> bool:
        token = secrets.token_hex(16)
        started = time.monotonic()
        try:  # a late answer leaves little of the TTL: half of it is the most we wait
            async with asyncio.timeout(self.ttl / 2):
                fence = await self._scripts.acquire(
                    keys=self._keys, args=[token, milliseconds(self.ttl), fence_life(self.ttl)]
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
        self._taken(started + self.ttl)
        return True

    async def _release(self) -> None:
        await self._giving_back()
        released = await self._scripts.release(keys=self._keys[:1], args=[self.token])
        if not released:
            raise LockLost(
                f"lock {self.name!r} had expired or changed hands before release(); "
                "work done under it may have overlapped another holder's"
            )


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


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def milliseconds(seconds: float) -> int:
    """A TTL for PX / PEXPIRE: whole milliseconds, at least 1."""
    return max(1, int(seconds * 1000))
