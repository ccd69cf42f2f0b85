"""What every lock here is: acquire with a timeout, release, `async with`, and the errors.

A backend implements `_try_acquire()` (one attempt, no waiting) and `_release()`; this
class adds the waiting: retries with jittered exponential backoff until the timeout,
so that waiters do not hammer the server in step.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from abc import ABC, abstractmethod
from typing import Self

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
