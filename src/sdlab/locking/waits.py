"""Who waits for whom, as the server itself sees it.

A statement that has not returned may be waiting on a lock, or simply running; only the
server knows which. Each engine keeps a view of its lock waits:

- MariaDB (and MySQL 5.7): `information_schema.INNODB_LOCK_WAITS`, one row per
  (requesting, blocking) pair of InnoDB transactions, joined to `INNODB_TRX` for the
  sessions' ids. MySQL 8 moved it to `performance_schema.data_lock_waits`; that view is
  used where `INNODB_LOCK_WAITS` is missing (not exercised here: this machine runs
  MariaDB, where performance_schema has no such table).
- PostgreSQL: `pg_stat_activity.wait_event_type = 'Lock'` says a backend sleeps on a
  heavyweight lock, `pg_blocking_pids()` which backends hold or are queued ahead for it.
  A backend just granted its lock may still show `Lock` for a moment (it clears its own
  wait event when it wakes), so a wait counts only while someone blocks it.

InnoDB's information_schema views are one cache for the whole server, refreshed only
when no session has read it for 100 ms (`trx_i_s_cache`, CACHE_MIN_IDLE_TIME_NS): asked
more often, it never changes. So this asks it at most every `_INNODB_IDLE` seconds; and
since another client polling it faster would still keep it stale, whether a session
waits is also read from `SHOW ENGINE INNODB STATUS`, which is made afresh on every call
(its `LOCK WAIT` transactions), and a waiter the cache does not list yet is reported
with no known holder.

Row locks only: a DDL statement waiting on a metadata lock (MariaDB) does not show here.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Collection
from typing import Any

from sdlab.sql import Session

_INNODB = """
SELECT r.trx_mysql_thread_id, b.trx_mysql_thread_id
FROM information_schema.INNODB_LOCK_WAITS w
JOIN information_schema.INNODB_TRX r ON r.trx_id = w.requesting_trx_id
JOIN information_schema.INNODB_TRX b ON b.trx_id = w.blocking_trx_id
"""

_MYSQL8 = """
SELECT r.trx_mysql_thread_id, b.trx_mysql_thread_id
FROM performance_schema.data_lock_waits w
JOIN information_schema.INNODB_TRX r ON r.trx_id = w.REQUESTING_ENGINE_TRANSACTION_ID
JOIN information_schema.INNODB_TRX b ON b.trx_id = w.BLOCKING_ENGINE_TRANSACTION_ID
"""

_INNODB_IDLE = 0.12
_INNODB_TRIES = 3

_WAITING_THREAD = re.compile(r"LOCK WAIT .*?\n(?:MariaDB|MySQL) thread id (\d+)", re.DOTALL)

_POSTGRES = """
SELECT pid, pg_blocking_pids(pid) FROM pg_stat_activity
WHERE wait_event_type = 'Lock' AND cardinality(pg_blocking_pids(pid)) > 0
"""


class LockWaits:
    """Asks the server, over a session of its own, which sessions wait on a lock."""

    def __init__(self, monitor: Session) -> None:
        self.monitor = monitor
        self._query: str | None = None
        self._last = 0.0

    async def _which(self) -> str:
        if self._query is None:
            if self.monitor.dialect.engine == "postgresql":
                self._query = _POSTGRES
            else:
                found = await self.monitor.fetchval(
                    "SELECT COUNT(*) FROM information_schema.TABLES WHERE "
                    "TABLE_SCHEMA = 'information_schema' AND TABLE_NAME = 'INNODB_LOCK_WAITS'"
                )
                self._query = _INNODB if found else _MYSQL8
        return self._query

    async def waiting(self, ids: Collection[int]) -> dict[int, set[int]]:
        """Each of the sessions `ids` that waits on a lock, with the ids of the sessions
        it waits for (empty if the server says it waits but the cache not yet for whom)."""
        if await self._which() is _POSTGRES:
            return _pairs(await self.monitor.fetch(_POSTGRES), ids)
        for _ in range(_INNODB_TRIES):
            found = _pairs(await self._innodb_view(), ids)
            waiters = {w for w in await self._innodb_status_waiters() if w in ids}
            if waiters <= set(found):
                return found
            # The cache was made before these waits began: read it again once it is
            # old enough to be made afresh.
        return found | {w: set() for w in waiters - set(found)}

    async def _innodb_view(self) -> list[tuple[Any, ...]]:
        idle = self._last + _INNODB_IDLE - time.monotonic()
        if idle > 0:
            await asyncio.sleep(idle)
        rows = await self.monitor.fetch(await self._which())
        self._last = time.monotonic()
        return rows

    async def _innodb_status_waiters(self) -> set[int]:
        """The threads InnoDB's status report shows in LOCK WAIT, now."""
        row = await self.monitor.fetchone("SHOW ENGINE INNODB STATUS")
        report = str(row[2]) if row else ""
        waiters = set()
        for block in report.split("\n---TRANSACTION ")[1:]:
            found = _WAITING_THREAD.search(block)
            if found:
                waiters.add(int(found.group(1)))
        return waiters


def _pairs(rows: list[tuple[Any, ...]], ids: Collection[int]) -> dict[int, set[int]]:
    found: dict[int, set[int]] = {}
    for waiter, blockers in rows:
        if int(waiter) in ids:
            held = blockers if isinstance(blockers, list) else [blockers]
            found.setdefault(int(waiter), set()).update(int(b) for b in held)
    return found
