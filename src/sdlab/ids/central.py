"""The central id service ("the Amazon way"): a SQL table of counters, one row per
service; clients take ids in batches and keep the next batch ready.

    counters = CounterTable(db)              # a sdlab.sql.Database on MariaDB
    await counters.create()
    batch = await counters.allocate("orders", 1000)     # range(n, n + 1000), all ours
    client = BatchClient(lambda n: counters.allocate("orders", n), batch=1000)
    await client.next_id()

One statement hands out a batch atomically, with no transaction held across round
trips: `INSERT ... ON DUPLICATE KEY UPDATE next_id = LAST_INSERT_ID(next_id + n)`, then
`LAST_INSERT_ID()` on the same connection is where our batch ends.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

from sdlab import sql

SERVICE_NAME = r"^[A-Za-z0-9_.:-]{1,64}$"
"""What a counter (a service) may be called."""


class CounterTable:
    """One row per service: the next id it has not handed out."""

    def __init__(self, db: sql.Database, table: str = "id_counters") -> None:
        self.db = db
        self.table = sql.identifier(table)
        self._quoted = db.dialect.quote(table)

    async def create(self) -> None:
        await self.db.execute(
            f"CREATE TABLE IF NOT EXISTS {self._quoted} ("
            " service VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY,"
            " next_id BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB"
        )

    async def allocate(self, service: str, count: int) -> range:
        """`count` consecutive ids for `service`, never handed out before (ids start at 1)."""
        if not re.match(SERVICE_NAME, service):
            raise ValueError(f"service names are 1-64 of A-Z a-z 0-9 _ . : -, got {service!r}")
        if count < 1:
            raise ValueError("count must be at least 1")
        async with self.db.session() as session:  # LAST_INSERT_ID() is per session
            await session.execute(
                f"INSERT INTO {self._quoted} (service, next_id) VALUES (%s, LAST_INSERT_ID(%s)) "
                "ON DUPLICATE KEY UPDATE next_id = LAST_INSERT_ID(next_id + %s)",
                (service, 1 + count, count),
            )
            end = int(await session.fetchval("SELECT LAST_INSERT_ID()"))
        return range(end - count, end)


class BatchClient:
    """Ids from batches of `batch`, fetched ahead: when half the current batch is used,
    the next one is requested in the background (double buffering), so a caller waits
    for the service only if it outruns it."""

    def __init__(self, allocate: Callable[[int], Awaitable[range]], *, batch: int = 1000) -> None:
        self._allocate = allocate
        self.batch = batch
        self.fetches = 0
        self._current: range = range(0)
        self._position = 0
        self._next: asyncio.Task[range] | None = None
        self._switching = asyncio.Lock()

    async def next_id(self) -> int:
        while self._position >= len(self._current):
            async with self._switching:  # one caller switches; the others wait for it
                if self._position >= len(self._current):
                    await self._switch()
        value = self._current[self._position]
        self._position += 1
        if self._next is None and self._position >= len(self._current) // 2:
            self._next = asyncio.create_task(self._fetch())
        return value

    async def next_ids(self, count: int) -> list[int]:
        return [await self.next_id() for _ in range(count)]

    async def close(self) -> None:
        if self._next is not None:
            self._next.cancel()
            await asyncio.gather(self._next, return_exceptions=True)

    async def _switch(self) -> None:
        task, self._next = self._next, None
        self._current = await task if task is not None else await self._fetch()
        self._position = 0

    async def _fetch(self) -> range:
        self.fetches += 1
        return await self._allocate(self.batch)
