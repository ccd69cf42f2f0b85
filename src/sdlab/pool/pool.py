"""An asyncio connection pool: fair to waiters, self-healing, and never hands out a dirty
connection.

    pool = Pool(MariaDB(url), min_size=4, max_size=10, timeout=5)
    async with pool:                                  # opens min_size connections
        async with pool.connection() as conn:         # the driver's own connection
            ...

How it works, in the order a request meets it:

- `getconn` takes the most recently returned idle connection (idle connections are a
  stack, so a quiet pool's extra connections reach `max_idle` and are closed). A
  connection idle for more than `check_idle` seconds is pinged first; a broken or
  expired one is discarded and the next one tried.
- With none idle, the request joins a FIFO queue of waiters, and the pool opens a new
  connection if it has room (`max_size`). A returned or new connection goes straight to
  the oldest waiter: a newcomer can never overtake someone already waiting.
- A waiter gives up after `timeout` with `PoolTimeout`, which says what the pool was
  doing, and, when the server is down, why the last connection attempt failed.
- `putconn` discards a broken connection, rolls back an open transaction (or discards
  the connection if it cannot), retires one past its `max_lifetime` (jittered, so
  connections opened together do not all expire together), then hands it on. Each
  connection closed while the pool is open is counted under its reason (`Discard`).
- Opening retries with jittered exponential backoff for up to `reconnect_timeout`
  seconds, so a pool rides out a database restart and refills to `min_size` by itself.
- With `leak_threshold` set, a connection held longer than that is logged with the
  stack of the code that took it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any, Generic, Self, TypeVar, cast

from sdlab.failure import describe
from sdlab.pool.connectors import Connector, Factory
from sdlab.pool.errors import PoolClosed, PoolError, PoolTimeout, TooManyRequests
from sdlab.pool.stats import Counters, Discard

C = TypeVar("C")

logger = logging.getLogger("sdlab.pool")

_BACKOFF_FIRST = 0.05  # seconds before the second connection attempt
_BACKOFF_MAX = 5.0
_LIFETIME_JITTER = 0.05  # each connection's lifetime is cut by up to 5%


@dataclass(eq=False, slots=True)
class _Slot:
    """A pooled connection and what the pool knows about it."""

    conn: Any
    created: float
    expires: float
    used: float  # when it last went idle or changed hands (monotonic)
    acquired: float = 0.0
    stack: list[traceback.FrameSummary] | None = None
    leak_timer: asyncio.TimerHandle | None = None
    returning: bool = False


class Pool(Generic[C]):
    """A pool of connections made by `connector` (or by a plain async factory)."""

    def __init__(
        self,
        connector: Connector[C] | Callable[[], Awaitable[C]],
        *,
        min_size: int = 4,
        max_size: int | None = None,
        timeout: float = 30.0,
        max_waiting: int = 0,
        max_lifetime: float = 3600.0,
        max_idle: float = 600.0,
        check_idle: float | None = 1.0,
        reconnect_timeout: float = 300.0,
        leak_threshold: float | None = None,
        configure: Callable[[C], Awaitable[object]] | None = None,
        reset: Callable[[C], Awaitable[object]] | None = None,
        name: str | None = None,
    ) -> None:
        """
        min_size, max_size: connections kept open, and the most ever open (default:
            min_size). The pool grows on demand and shrinks back after max_idle.
        timeout: seconds `getconn` waits before raising PoolTimeout.
        max_waiting: requests allowed to queue (0: no limit); more raise TooManyRequests.
        max_lifetime: seconds after which a connection is replaced (cut by up to 5%).
        max_idle: seconds an idle connection above min_size is kept.
        check_idle: ping a connection on checkout if it sat idle this long (None: never).
        reconnect_timeout: seconds to keep retrying a connection that fails to open.
        leak_threshold: log a warning with the taker's stack if a connection is held
            longer than this (None: off; capturing the stack costs ~10 us a checkout).
        configure: `async def configure(conn)` run on each new connection before anyone gets
            it (session settings, say). If it raises, the connection is closed and the
            attempt counts as failed, like a failed connect. It must leave the connection
            outside a transaction (commit, or use autocommit).
        reset: `async def reset(conn)` run on each connection given back, after any
            rollback (to drop session state: `RESET CONNECTION`, `DISCARD ALL`). If it
            raises, the connection is discarded.
        """
        self.connector: Connector[C] = (
            cast(Connector[C], connector) if hasattr(connector, "connect") else Factory(connector)
        )
        self.name = name or f"pool-{id(self):x}"
        self.timeout = timeout
        self.max_waiting = max_waiting
        self.max_lifetime = max_lifetime
        self.max_idle = max_idle
        self.check_idle = check_idle
        self.reconnect_timeout = reconnect_timeout
        self.leak_threshold = leak_threshold
        self.configure = configure
        self.reset = reset
        self.min_size, self.max_size = _sizes(min_size, max_size)
        for label, value in (
            ("timeout", timeout),
            ("max_lifetime", max_lifetime),
            ("max_idle", max_idle),
            ("reconnect_timeout", reconnect_timeout),
        ):
            if value <= 0:
                raise ValueError(f"{label} must be positive, got {value}")

        self._idle: deque[_Slot] = deque()
        self._busy: dict[int, _Slot] = {}
        self._waiters: deque[asyncio.Future[_Slot]] = deque()
        self._waiting = 0  # live futures in _waiters (given-up ones are skipped lazily)
        self._opening = 0
        self._tasks: set[asyncio.Task[Any]] = set()  # closing connections: run to the end
        self._openers: set[asyncio.Task[Any]] = set()  # opening ones: cancelled by close()
        self._maintainer: asyncio.Task[None] | None = None
        self._opened = False
        self._closed = False
        self._changed: asyncio.Event | None = None  # set whenever a connection is placed
        self._reconnected: asyncio.Event | None = None  # pulsed when a connect succeeds
        self._last_error: tuple[float, str] | None = None
        self._orphans: set[int] = set()  # lent connections that close() closed under their user
        self._close_done: asyncio.Event | None = None
        self._counters = Counters()

    # -- public API -------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Connections open, in use, or being opened."""
        return len(self._idle) + len(self._busy) + self._opening

    @property
    def closed(self) -> bool:
        return self._closed

    async def open(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Start the pool's maintenance and open min_size connections. With `wait`,
        return once they are open (PoolTimeout if not within `timeout`)."""
        if self._closed:
            raise PoolClosed(f"pool {self.name!r} is closed; make a new one")
        if not self._opened:
            self._opened = True
            self._changed = asyncio.Event()
            self._reconnected = asyncio.Event()
            self._maintainer = asyncio.create_task(self._maintain(), name=f"{self.name} maintainer")
            self._grow()
        if wait:
            limit = self.timeout if timeout is None else timeout
            try:
                async with asyncio.timeout(limit):
                    while len(self._idle) + len(self._busy) < self.min_size:
                        assert self._changed is not None
                        self._changed.clear()
                        await self._changed.wait()
            except TimeoutError:
                raise PoolTimeout(
                    self._timeout_message(
                        f"{self.min_size} connections were not open within {limit:g} s"
                    )
                ) from None

    async def getconn(self, timeout: float | None = None) -> C:
        """Take a connection; give it back with `putconn` (or use `connection()`)."""
        if not self._opened:
            await self.open(wait=False)
        if self._closed:
            raise PoolClosed(f"pool {self.name!r} is closed")
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        started, queued = perf_counter_ns(), False
        self._counters.requests += 1
        try:
            while True:
                slot = self._take_idle()
                if slot is None:
                    slot, queued = await self._wait(deadline, limit), True
                if await self._usable(slot, deadline):
                    break
        except PoolTimeout:  # under overload the waits must show it
            self._counters.wait.record(perf_counter_ns() - started)
            raise
        if queued:
            self._counters.wait.record(perf_counter_ns() - started)
        else:  # the common case stays cheap: a histogram update costs ~2 us
            self._counters.served_at_once += 1
        self._lend(slot)
        return slot.conn

    async def putconn(self, conn: C) -> None:
        """Give a connection back. A broken one is discarded, an open transaction rolled
        back, a connection past its lifetime replaced."""
        slot = self._busy.get(id(conn))
        if slot is None and id(conn) in self._orphans:
            self._orphans.discard(id(conn))  # close() already closed it under its user
            return
        if slot is None or slot.conn is not conn or slot.returning:
            raise PoolError(
                f"this connection was not taken from pool {self.name!r}, or was already given back"
            )
        slot.returning = True
        if slot.leak_timer is not None:
            slot.leak_timer.cancel()
        now = time.monotonic()
        used = int((now - slot.acquired) * 1e9)
        self._counters.given_back(used)
        try:
            reason = await self._reason_to_discard(slot, now)
        except BaseException:  # cancelled mid-rollback or mid-reset: state unknown
            if self._busy.pop(id(conn), None) is not None:
                self._discard(slot, Discard.LOST)
            raise
        if self._busy.pop(id(conn), None) is None:
            self._orphans.discard(id(conn))  # close() timed out meanwhile and closed it
            return
        slot.returning, slot.stack, slot.leak_timer = False, None, None
        if reason is not None:
            self._discard(slot, reason)
        else:
            self._place(slot)

    def connection(self, timeout: float | None = None) -> AbstractAsyncContextManager[C]:
        """`async with pool.connection() as conn:` The pool never commits for you: a
        transaction still open at the end of the block is rolled back."""
        return _Lease(self, timeout)

    async def resize(self, min_size: int, max_size: int | None = None) -> None:
        """Change the sizes of a running pool. Growth happens at once; extra idle
        connections close at once, busy ones as they come back."""
        self.min_size, self.max_size = _sizes(min_size, max_size)
        while self._idle and self.size > self.max_size:
            self._discard(self._idle.popleft(), Discard.SHRUNK)
        self._grow()

    async def check(self) -> None:
        """Ping every idle connection now; discard the ones that do not answer."""
        for _ in range(len(self._idle)):
            if not self._idle:
                break
            slot = self._idle.popleft()
            self._busy[id(slot.conn)] = slot
            healthy = False
            try:
                await self.connector.check(slot.conn)
                healthy = not self.connector.in_transaction(slot.conn)
            except Exception:
                pass
            finally:  # also when cancelled: the slot must not stay marked as lent
                if self._busy.pop(id(slot.conn), None) is not None:
                    if healthy:
                        self._place(slot, touched=False)  # a ping is not use: max_idle runs on
                    else:
                        self._discard(slot, Discard.LOST)

    def stats(self) -> dict[str, Any]:
        """The pool's state and counters since it was made, as a plain dict."""
        return {
            "name": self.name,
            "min_size": self.min_size,
            "max_size": self.max_size,
            "size": self.size,
            "idle": len(self._idle),
            "in_use": len(self._busy),
            "waiting": self._waiting,
            "opening": self._opening,
            **self._counters.summary(),
        }

    async def close(self, timeout: float = 5.0) -> None:
        """Stop taking requests, wait up to `timeout` for lent connections to come back
        (drain), then close everything. Waiting requests get PoolClosed."""
        if self._closed:
            if self._close_done is not None:
                await self._close_done.wait()  # another close() is draining: wait for it
            return
        self._closed = True
        self._close_done = asyncio.Event()
        try:
            await self._drain(timeout)
        finally:
            self._close_done.set()

    async def _drain(self, timeout: float) -> None:
        if self._maintainer is not None:
            self._maintainer.cancel()
        for opener in self._openers:
            opener.cancel()
        for future in self._waiters:
            if not future.done():
                future.set_exception(PoolClosed(f"pool {self.name!r} closed while waiting"))
        self._waiters.clear()
        self._waiting = 0
        idle, self._idle = list(self._idle), deque()
        await asyncio.gather(*(self._close_slot(slot) for slot in idle))
        try:
            async with asyncio.timeout(timeout):
                while self._busy:
                    assert self._changed is not None
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            logger.warning(
                "pool %r: closing %d connections still in use after %g s",
                self.name,
                len(self._busy),
                timeout,
            )
            busy, self._busy = list(self._busy.values()), {}
            for slot in busy:
                if slot.leak_timer is not None:
                    slot.leak_timer.cancel()
                self._orphans.add(id(slot.conn))  # its late putconn() is then a no-op
            await asyncio.gather(*(self._close_slot(slot) for slot in busy))
        await asyncio.gather(*self._openers, return_exceptions=True)
        while self._tasks:  # connections being closed, including ones given back late
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._maintainer is not None:
            await asyncio.gather(self._maintainer, return_exceptions=True)

    async def __aenter__(self) -> Self:
        await self.open(wait=True)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<Pool {self.name!r} {self._state()}>"

    # -- taking -----------------------------------------------------------------------

    def _has_waiters(self) -> bool:
        """Whether a live request is queued. Futures of requests that gave up are dropped
        here: the `_waiting` count lags until their tasks run."""
        while self._waiters and self._waiters[0].done():
            self._waiters.popleft()
        return bool(self._waiters)

    def _take_idle(self) -> _Slot | None:
        if not self._idle or self._has_waiters():  # FIFO: never overtake a waiting request
            return None
        slot = self._idle.pop()
        self._busy[id(slot.conn)] = slot
        return slot

    async def _wait(self, deadline: float, limit: float) -> _Slot:
        if self._closed:
            raise PoolClosed(f"pool {self.name!r} is closed")
        if self.max_waiting and self._waiting >= self.max_waiting:
            raise TooManyRequests(
                f"pool {self.name!r}: {self._waiting} requests are already "
                f"waiting (max_waiting={self.max_waiting})"
            )
        future: asyncio.Future[_Slot] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._waiting += 1
        self._counters.requests_queued += 1
        self._grow()
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                return await future
        except BaseException as exc:
            if future.done() and not future.cancelled() and future.exception() is None:
                slot = future.result()  # handed over just as we gave up
                if isinstance(exc, TimeoutError):
                    return slot
                del self._busy[id(slot.conn)]
                self._place(slot)
                raise
            if isinstance(exc, TimeoutError):
                self._counters.requests_timeouts += 1
                message = self._timeout_message(f"no connection within {limit:g} s")
            # Our timeout (or a caller's cancel) cancels the future we awaited; either
            # way this request leaves the queue. A future failed by close() was counted.
            if future.cancelled() or not future.done():
                future.cancel()
                self._waiting -= 1
            if isinstance(exc, TimeoutError):
                raise PoolTimeout(message) from None
            raise

    async def _usable(self, slot: _Slot, deadline: float) -> bool:
        """Is this (already busy) slot fit to lend? If not, it is discarded. A ping
        must answer before the request's deadline."""
        now = time.monotonic()
        if self.connector.is_broken(slot.conn):
            reason: Discard | None = Discard.LOST
        elif now >= slot.expires:
            reason = Discard.RECYCLED
        elif self.check_idle is not None and now - slot.used >= self.check_idle:
            try:
                async with asyncio.timeout(max(0.0, deadline - now)):
                    await self.connector.check(slot.conn)
                reason = Discard.LOST if self.connector.in_transaction(slot.conn) else None
            except asyncio.CancelledError:
                del self._busy[id(slot.conn)]
                self._discard(slot, Discard.LOST)
                raise
            except Exception:
                reason = Discard.LOST
        else:
            reason = None
        if reason is not None:
            del self._busy[id(slot.conn)]
            self._discard(slot, reason)
            return False
        return True

    def _lend(self, slot: _Slot) -> None:
        slot.acquired = time.monotonic()
        if self.leak_threshold is not None:
            slot.stack = traceback.extract_stack(limit=16)[:-2]  # drop getconn's own frames
            slot.leak_timer = asyncio.get_running_loop().call_later(
                self.leak_threshold, self._leaked, slot
            )

    def _leaked(self, slot: _Slot) -> None:
        self._counters.leaks_suspected += 1
        stack = "".join(traceback.format_list(slot.stack)) if slot.stack else "(no stack)\n"
        logger.warning(
            "pool %r: a connection has been held for more than %g s; it was taken at:\n%s",
            self.name,
            self.leak_threshold,
            stack,
        )

    # -- giving back --------------------------------------------------------------------

    async def _reason_to_discard(self, slot: _Slot, now: float) -> Discard | None:
        conn = slot.conn
        if self.connector.is_broken(conn):
            return Discard.LOST
        if self.connector.in_transaction(conn):
            try:
                await self.connector.rollback(conn)
            except Exception:
                logger.warning(
                    "pool %r: rollback of a returned connection failed; discarding it",
                    self.name,
                    exc_info=True,
                )
                return Discard.LOST
            self._counters.returns_rolled_back += 1
            if self.connector.is_broken(conn) or self.connector.in_transaction(conn):
                return Discard.LOST
        if self.reset is not None:
            try:
                await self.reset(conn)
            except Exception:
                logger.warning(
                    "pool %r: reset of a returned connection failed; discarding it",
                    self.name,
                    exc_info=True,
                )
                return Discard.LOST
            if self.connector.is_broken(conn) or self.connector.in_transaction(conn):
                return Discard.LOST
        if now >= slot.expires:
            return Discard.RECYCLED
        if self.size > self.max_size:
            return Discard.SHRUNK
        return None

    def _place(self, slot: _Slot, *, touched: bool = True) -> None:
        """Hand a healthy connection to the oldest waiter, or make it idle."""
        if self._closed:
            self._close_in_background(slot)
            self._notify()
            return
        if touched:
            slot.used = time.monotonic()
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                self._waiting -= 1
                self._busy[id(slot.conn)] = slot
                future.set_result(slot)
                self._notify()
                return
        self._idle.append(slot)
        self._notify()

    def _discard(self, slot: _Slot, reason: Discard) -> None:
        """Count, close in the background, and replace if the pool needs one."""
        self._counters.discarded(reason)
        self._close_in_background(slot)
        self._notify()  # close() may be waiting for this slot to leave
        if not self._closed:
            self._grow()

    # -- opening and closing ---------------------------------------------------------

    def _grow(self) -> None:
        """Start opening as many connections as waiters and min_size call for."""
        if self._closed or not self._opened:
            return
        wanted = max(self._waiting - self._opening, self.min_size - self.size)
        for _ in range(min(wanted, self.max_size - self.size)):
            self._opening += 1
            self._spawn(self._open_one(), "open")

    async def _open_one(self) -> None:
        """Open one connection, retrying with backoff; place it, or give up."""
        delay, started, counted = _BACKOFF_FIRST, time.monotonic(), True
        try:
            while True:
                try:
                    conn = await self.connector.connect()
                    if self.configure is not None:
                        try:
                            await self.configure(conn)
                            if self.connector.in_transaction(conn):
                                raise PoolError(
                                    "configure() left the connection inside a transaction; "
                                    "commit in it, or open connections with autocommit"
                                )
                        except BaseException:
                            self._spawn(self.connector.close(conn), "close")
                            raise
                    break
                except Exception as exc:
                    self._counters.connections_failed += 1
                    first = (
                        self._last_error is None
                        or time.monotonic() - self._last_error[0] > 2 * _BACKOFF_MAX
                    )
                    self._last_error = (time.monotonic(), describe(exc))
                    if first:
                        logger.warning(
                            "pool %r: cannot connect (%s); retrying with backoff",
                            self.name,
                            self._last_error[1],
                        )
                    if time.monotonic() - started > self.reconnect_timeout:
                        logger.error(
                            "pool %r: gave up connecting after %g s: %s",
                            self.name,
                            self.reconnect_timeout,
                            self._last_error[1],
                        )
                        return
                    if self._waiting == 0 and self.size > self.min_size:
                        return  # nobody needs this connection any more
                    await self._back_off(delay * random.uniform(0.5, 1.0))
                    delay = min(delay * 2, _BACKOFF_MAX)
            self._opening -= 1
            counted = False
            now = time.monotonic()
            slot = _Slot(
                conn,
                created=now,
                used=now,
                expires=now + self.max_lifetime * (1 - _LIFETIME_JITTER * random.random()),
            )
            self._counters.connections_opened += 1
            if self._reconnected is not None:  # the server is back: wake the openers in backoff
                self._reconnected.set()
                self._reconnected.clear()
            if len(self._idle) + len(self._busy) >= self.max_size:
                self._counters.discarded(Discard.SHRUNK)  # resize() shrank it meanwhile
                self._close_in_background(slot)
            else:
                self._place(slot)  # (closes it if the pool was closed meanwhile)
        finally:
            if counted:
                self._opening -= 1

    async def _back_off(self, seconds: float) -> None:
        """Sleep before the next attempt, unless another connect succeeds first."""
        assert self._reconnected is not None
        try:
            async with asyncio.timeout(seconds):
                await self._reconnected.wait()
        except TimeoutError:
            pass

    def _close_in_background(self, slot: _Slot) -> None:
        self._spawn(self._close_slot(slot), "close")

    async def _close_slot(self, slot: _Slot) -> None:
        self._counters.connections_closed += 1
        try:
            await self.connector.close(slot.conn)
        except Exception:
            logger.debug("pool %r: error closing a connection", self.name, exc_info=True)

    async def _maintain(self) -> None:
        """Close connections idle too long or past their lifetime; keep min_size open."""
        tick = max(0.01, min(1.0, self.max_idle / 4, self.max_lifetime / 4))
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            # The idle deque is a stack: its left end holds the longest-idle connections.
            while (
                self._idle
                and self.size > self.min_size
                and now - self._idle[0].used >= self.max_idle
            ):
                self._discard(self._idle.popleft(), Discard.IDLED_OUT)
            while self._idle and len(self._idle) + len(self._busy) > self.max_size:
                self._discard(self._idle.popleft(), Discard.SHRUNK)
            for slot in [s for s in self._idle if now >= s.expires]:
                self._idle.remove(slot)
                self._discard(slot, Discard.RECYCLED)
            self._grow()

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.name} {what}")
        tasks = self._openers if what == "open" else self._tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    # -- messages ---------------------------------------------------------------------

    def _state(self) -> str:
        return (
            f"size {self.size} of {self.max_size}, {len(self._idle)} idle, "
            f"{len(self._busy)} in use, {self._waiting} waiting, {self._opening} opening"
        )

    def _timeout_message(self, what: str) -> str:
        message = f"pool {self.name!r}: {what} ({self._state()})"
        if self._last_error is not None:
            age = time.monotonic() - self._last_error[0]
            if age < 60:
                message += (
                    f"; the last attempt to connect failed {age:.1f} s ago: {self._last_error[1]}"
                )
        return message


class _Lease(Generic[C]):
    """What `pool.connection()` returns: borrows on enter, gives back on exit."""

    __slots__ = ("_conn", "_pool", "_timeout")

    def __init__(self, pool: Pool[C], timeout: float | None) -> None:
        self._pool, self._timeout = pool, timeout

    async def __aenter__(self) -> C:
        self._conn = await self._pool.getconn(self._timeout)
        return self._conn

    async def __aexit__(self, *exc_info: object) -> None:
        await self._pool.putconn(self._conn)


def _sizes(min_size: int, max_size: int | None) -> tuple[int, int]:
    max_size = min_size if max_size is None else max_size
    if min_size < 0 or max_size < 1 or max_size < min_size:
        raise ValueError(
            f"need 0 <= min_size <= max_size and max_size >= 1; "
            f"got min_size={min_size}, max_size={max_size}"
        )
    return min_size, max_size
