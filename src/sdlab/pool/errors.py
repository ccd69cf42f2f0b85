"""The pool's own errors: each says what the pool was doing when it gave up."""

from __future__ import annotations


class PoolError(Exception):
    """Base class for the pool's own errors."""


class PoolTimeout(PoolError, TimeoutError):
    """No connection became available within the timeout."""


class PoolClosed(PoolError):
    """The pool is closed (or was closed while the request waited)."""


class TooManyRequests(PoolError):
    """More requests are already waiting than `max_waiting` allows."""
