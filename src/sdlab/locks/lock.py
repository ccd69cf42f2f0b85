"""What every lock here is: acquire with a timeout, release, `async with`, and the errors.

A backend implements `_try_acquire()` (one attempt, no waiting) and `_release()`; this
class adds the waiting: retries with jittered exponential backoff until the timeout,
so that waiters do not hammer the server in step. `ExpiringLock` adds what a lock with
a TTL needs: `valid_until`, the `lost` event, and renewal in the background.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from abc import ABC, abstractmethod
from typing import Self

logger = logging.getLogger("sdlab.locks")

RETRY_FIRST = 0.002  # seconds before the second attempt
RETRY_MAX = 0.05


class LockError(Exception):
    """Base class of the locks' errors."""


class LockTimeout(LockError, TimeoutError):
    """The lock was not acquired within the timeout. The message says who answered what."""


class LockLost(LockError):
    """The lock expired, or was taken by someone else, while we thought we held it: work
    done under it since may have overlapped with another holder's."""


class StaleToken(LockError):
    """A fenced resource refused a write: a later holder has already written with a
    higher fencing token."""


class Lock(ABC):
    """A mutual-exclusion lock on `name`, held by one owner at a time.

    `timeout` is how long `acquire()` (and `async with`) waits by default; None waits for
    ever. While held, `fence` is the fencing token of this acquisition (a number that
    grows with every acquisition of the lock) where the backend provides one.
    """

    def __init__(self, name: str, *, timeout: float | None = None) -> None:
        if not name:
            raise ValueError("a lock needs a name")
        self.name = name
        self.timeout = timeout
        self.fence: int | None = None
        self._held = False

    @property
    def held(self) -> bool:
        """Whether this object holds the lock, as far as it knows."""
        return self._held

    async def acquire(self, timeout: float | None = None, *, blocking: bool = True) -> bool:
        """Take the lock. Waits up to `timeout` seconds (default: the lock's own
        `timeout`; `math.inf`: for ever), retrying with jittered backoff; with
        `blocking=False`, tries once. Returns whether the lock was taken."""
        if self._held:
            raise LockError(f"lock {self.name!r} is already held by this object")
        limit = self.timeout if timeout is None else timeout
        deadline = None if limit is None or math.isinf(limit) else time.monotonic() + limit
        delay = RETRY_FIRST
        while True:
            if await self._try_acquire():
                self._held = True
                return True
            if not blocking:
                return False
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return False
            pause = delay * random.uniform(0.5, 1.0)
            if deadline is not None:
                pause = min(pause, deadline - now)
            await asyncio.sleep(pause)
            delay = min(delay * 2, RETRY_MAX)

    async def release(self) -> None:
        """Give the lock back. Raises LockLost if it had expired or changed hands."""
        if not self._held:
            raise LockError(f"lock {self.name!r} is not held by this object")
        self._held = False
        try:
            await self._release()
        finally:
            self.fence = None

    async def __aenter__(self) -> Self:
        if not await self.acquire():
            raise LockTimeout(self._timeout_message())
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._held:
            await self.release()

    def _timeout_message(self) -> str:
        return f"lock {self.name!r} was not acquired within {self.timeout} s"

    @abstractmethod
    async def _try_acquire(self) -> bool:
        """One attempt; True if the lock is now ours."""

    @abstractmethod
    async def _release(self) -> None:
        """Give it back; raise LockLost if it was no longer ours."""


class ExpiringLock(Lock):
    """A lock that frees itself `ttl` seconds after it was taken or last extended.

    auto_renew: while held, extend the TTL every ttl/3 seconds in the background, so a
        long critical section keeps the lock while its process is alive. If a renewal
        finds the lock gone, or the TTL runs out before one succeeds, `lost` is set and
        leaving `async with` raises LockLost.
    """

    def __init__(
        self, name: str, *, ttl: float, timeout: float | None = None, auto_renew: bool = False
    ) -> None:
        super().__init__(name, timeout=timeout)
        if ttl <= 0:
            raise ValueError(f"ttl must be positive, got {ttl}")
        self.ttl = ttl
        self.auto_renew = auto_renew
        self.lost = asyncio.Event()
        self.valid_until = 0.0  # monotonic: the lock is ours at least until then
        self._renewer: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None

    @property
    def held(self) -> bool:
        """Held, and certainly not expired: False once `valid_until` has passed."""
        return self._held and not self.lost.is_set() and time.monotonic() < self.valid_until

    @abstractmethod
    async def extend(self, ttl: float | None = None) -> None:
        """Reset the TTL to `ttl` (default: the lock's); LockLost if no longer ours
        (and then `lost` is set)."""

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        lost = self.lost.is_set()
        await super().__aexit__(exc_type, exc, tb)
        if lost and exc is None:
            raise LockLost(
                f"lock {self.name!r} was lost while held (it expired, or a renewal found it gone)"
            )

    def _taken(self, valid_until: float) -> None:
        """Call when an attempt has won the lock, valid until `valid_until`."""
        self.lost.clear()
        self._valid_until(valid_until)
        if self.auto_renew:
            self._renewer = asyncio.create_task(self._renew(), name=f"renew lock {self.name}")

    async def _giving_back(self) -> None:
        """Call first in `_release()`: no more renewals, no expiry timer."""
        if self._expiry is not None:
            self._expiry.cancel()
        if self._renewer is not None and self._renewer is not asyncio.current_task():
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        self._renewer = None

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.extend()
            except LockLost:
                logger.warning("lock %r: lost while held (renewal found it gone)", self.name)
                self._lose()
                return
            except Exception as exc:  # the server is unreachable: keep trying while valid
                if time.monotonic() >= self.valid_until:
                    logger.warning("lock %r: could not renew before expiry: %s", self.name, exc)
                    self._lose()
                    return
                await asyncio.sleep(min(0.05, self.ttl / 10))

    def _lose(self) -> None:
        self.lost.set()

    def _valid_until(self, deadline: float) -> None:
        """Record how long the lock is certainly ours, and mark it lost at that moment
        unless it is extended first (a holder cut off from its servers learns it in time)."""
        self.valid_until = deadline
        if self._expiry is not None:
            self._expiry.cancel()
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_at(loop.time() + deadline - time.monotonic(), self._expire)

    def _expire(self) -> None:
        if self._held and time.monotonic() >= self.valid_until:
            logger.warning("lock %r: expired while held", self.name)
            self.lost.set()
