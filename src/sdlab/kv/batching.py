"""Group commit: writes from many callers share one transaction, and each caller hears
back only once that transaction has committed. And the same for reads (`GroupRead`):
the keys asked for in one turn of the event loop are read with one statement.

One writer task takes everything queued (up to `max_batch`) and runs it as one
transaction; while that commits, new writes queue up and form the next batch. There is
no timer: under light load a batch is one write and waits for nothing, under heavy load
batches grow by themselves to the number of writes that arrive during one commit.
A single writer also keeps writes in the order they were submitted, so a client that
pipelines `SET k 1` then `SET k 2` ends with 2.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from typing import Any

from sdlab.kv import ops
from sdlab.kv.backends import Backend
from sdlab.kv.core import KVError, StoreClosed, now_ms
from sdlab.kv.sql import Dialect
from sdlab.latency import Latency

logger = logging.getLogger("sdlab.kv")


class GroupCommit:
    """A queue of writes in front of a backend, drained one transaction at a time."""

    def __init__(self, backend: Backend, *, max_batch: int = 1000) -> None:
        self.backend = backend
        self.max_batch = max_batch
        self._queue: deque[tuple[ops.Write, asyncio.Future[Any]]] = deque()
        self._committing: list[tuple[ops.Write, asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.batches = 0
        self.writes = 0
        self.largest = 0
        self.commit_time = Latency()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="kv-group-commit")

    def submit(self, write: ops.Write) -> asyncio.Future[Any]:
        """Queue a write now (not at the caller's next await); the future resolves after
        its batch commits, with the write's result or its KVError."""
        if self._closing or self._task is None:
            raise StoreClosed("the store is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((write, future))
        self._wake.set()
        return future

    async def _run(self) -> None:
        try:
            while True:
                while self._queue:
                    size = min(len(self._queue), self.max_batch)
                    self._committing = [self._queue.popleft() for _ in range(size)]
                    await self._commit(self._committing)
                    self._committing = []
                if self._closing:
                    return
                await self._wake.wait()
                self._wake.clear()
        finally:  # empty, unless the writer was cancelled: then nobody may wait forever
            self._closing = True
            gone = StoreClosed("the store stopped before it answered this write")
            for _, future in [*self._committing, *self._queue]:
                if not future.done():
                    future.set_exception(gone)
            self._queue.clear()

    async def _commit(self, taken: list[tuple[ops.Write, asyncio.Future[Any]]]) -> None:
        # A caller that gave up (cancelled) still has its write in the batch: it was
        # accepted and may commit; it just hears nothing.
        writes = [write for write, _ in taken]
        try:
            with self.commit_time.time():
                results = await self.backend.write(
                    lambda: ops.batch(self.backend.dialect, writes, now_ms())
                )
        except Exception as exc:  # the whole transaction failed: nobody's write is known
            logger.warning("batch of %d writes failed: %s", len(taken), exc)
            for _, future in taken:
                if not future.done():
                    future.set_exception(exc)
            return
        self.batches += 1
        self.writes += len(taken)
        self.largest = max(self.largest, len(taken))
        for (_, future), result in zip(taken, results, strict=True):
            if future.done():
                continue
            if isinstance(result, KVError):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def close(self) -> None:
        """Refuse new writes, commit those queued, stop."""
        self._closing = True
        if self._task is None:
            return
        self._wake.set()
        # It returns once the queue is empty and its batch committed (or it was
        # cancelled, and has failed what it held): wait, without raising its end here.
        await asyncio.wait([self._task])
        self._task = None

    def stats(self) -> dict[str, Any]:
        return {
            "writes": self.writes,
            "batches": self.batches,
            "largest_batch": self.largest,
            "mean_batch": round(self.writes / self.batches, 2) if self.batches else 0.0,
            "queued": len(self._queue),
        }


class GroupRead:
    """Lookups of keys made in the same turn of the event loop (GETs from 50 clients,
    the GETs of a pipeline) go to the database as one `SELECT ... WHERE k IN (...)`,
    where each would have been a query, a round trip and on SQLite a thread hop. There
    is no timer: the batch is read at the end of the turn its first lookup came in, or,
    with `concurrency` reads already running, as soon as one of them ends (so under load
    batches grow, as group commit's do, instead of queueing up for the connections)."""

    def __init__(
        self, backend: Backend, *, dialect: Dialect | None = None, concurrency: int = 1
    ) -> None:
        self.backend = backend
        self.dialect = dialect or backend.dialect  # the table (a database's, say)
        self.concurrency = concurrency
        self._waiting: list[asyncio.Future[tuple[ops.Found, int]]] = []
        self._keys: set[bytes] = set()
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.reads = 0
        self.lookups = 0

    def lookup(self, keys: Iterable[bytes]) -> asyncio.Future[tuple[ops.Found, int]]:
        """A future of the live rows found (of these keys and others asked for in the
        same turn) and the time they were judged alive at."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[ops.Found, int]] = loop.create_future()
        self._waiting.append(future)
        self._keys.update(keys)
        if not self._scheduled and len(self._tasks) < self.concurrency:
            self._scheduled = True
            loop.call_soon(self._read)
        return future

    def _read(self) -> None:
        self._scheduled = False
        if not self._waiting:
            return
        waiting, keys = self._waiting, self._keys
        self._waiting, self._keys = [], set()
        task = asyncio.get_running_loop().create_task(self._answer(waiting, keys))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._waiting and not self._scheduled:  # they came while all readers were busy
            self._read()

    async def _answer(
        self, waiting: list[asyncio.Future[tuple[ops.Found, int]]], keys: set[bytes]
    ) -> None:
        now = now_ms()
        try:
            found = await self.backend.read(ops.rows(self.dialect, now, keys))
        except Exception as exc:
            for future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        self.reads += 1
        self.lookups += len(waiting)
        for future in waiting:
            if not future.done():
                future.set_result((found, now))

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks))

    def stats(self) -> dict[str, Any]:
        return {
            "lookups": self.lookups,
            "reads": self.reads,
            "mean_read_batch": round(self.lookups / self.reads, 2) if self.reads else 0.0,
        }
