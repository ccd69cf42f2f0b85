"""The sweeper: removes expired (and deleted) rows in the background.

Reads never return an expired key (they check its time), so the sweeper is only about
space. It deletes at most `batch` rows per statement, each statement its own short
transaction, and rests `pause` seconds between statements, so a writer never waits
behind it for long; it keeps going while it finds full batches, then sleeps `interval`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from sdlab.kv import ops
from sdlab.kv.backends import Backend
from sdlab.kv.core import now_ms
from sdlab.kv.sql import Dialect

logger = logging.getLogger("sdlab.kv")


class Sweeper:
    def __init__(
        self,
        backend: Backend,
        *,
        interval: float = 1.0,
        batch: int = 500,
        pause: float = 0.01,
        tables: Callable[[], Iterable[Dialect]] | None = None,
    ) -> None:
        """tables: the tables to sweep (the Redis databases'), each time; default the
        backend's one."""
        self.backend = backend
        self.tables = tables or (lambda: [backend.dialect])
        self.interval = interval
        self.batch = batch
        self.pause = pause
        self.swept = 0
        self.statements = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="kv-sweeper")

    async def sweep(self) -> int:
        """Remove every row expired by now, `batch` rows at a time; how many."""
        total = 0
        for table in self.tables():
            while True:
                removed = await self.backend.write(self._sweeping(table))
                self.statements += 1
                total += removed
                self.swept += removed
                if removed < self.batch:
                    break
                await asyncio.sleep(self.pause)
        return total

    def _sweeping(self, table: Dialect) -> Callable[[], ops.Script[int]]:
        return lambda: ops.sweep(table, now_ms(), self.batch)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep()
            except Exception as exc:  # the database is away: try again next time
                logger.warning("sweep failed: %s", exc)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
