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

InnoDB's information_schema views are a cache, refreshed only when it has not been read
for 100 ms (`trx_i_s_cache`, CACHE_MIN_IDLE_TIME_US): asked more often, it never
changes. So MariaDB is asked at most every `_INNODB_IDLE` seconds.

Row locks only: a DDL statement waiting on a metadata lock (MariaDB) does not show here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection

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
        it waits for."""
        query = await self._which()
        if query is not _POSTGRES:
            idle = self._last + _INNODB_IDLE - time.monotonic()
            if idle > 0:
                await asyncio.sleep(idle)
        rows = await self.monitor.fetch(query)
        self._last = time.monotonic()
        found: dict[int, set[int]] = {}
        for waiter, blockers in rows:
            if int(waiter) not in ids:
                continue
            held = blockers if isinstance(blockers, list) else [blockers]
            found.setdefault(int(waiter), set()).update(int(b) for b in held)
        return found
