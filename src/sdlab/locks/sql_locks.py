"""Locks the database already has: MariaDB `GET_LOCK` and PostgreSQL advisory locks.

Both are held by a database session, so each lock object keeps a connection of its
own, opened on first use. Waiting happens in the server (no polling), and a crashed
holder's lock is freed the moment the server sees its connection close. There is no
TTL: a holder that stalls keeps the lock for as long as its connection lives. A
heartbeat (every 5 s by default) tells a holder whose session ended, or lost the lock,
by setting `lost`. Neither gives a fencing token.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from sdlab.infra.services import mariadb, postgres
from sdlab.locks.lock import Lock, LockError, LockLost

logger = logging.getLogger("sdlab.locks")

_GET_LOCK_MAX_NAME = 64  # MariaDB's limit on a user lock name
_A_YEAR = 365 * 24 * 3600


class _SessionLock(Lock):
    """Shared part: one connection per lock object; server-side waits.

    heartbeat: while held, ask the server every this many seconds whether this session
    still holds the lock (None: never). If not, or the session is gone, `lost` is set and
    `held` turns False: the holder learns in seconds, not at release(). The pings also
    keep an idle-timeout (`wait_timeout`, a proxy) from ending the session.
    """

    def __init__(
        self, url: str, name: str, *, timeout: float | None = None, heartbeat: float | None = 5.0
    ) -> None:
        super().__init__(name, timeout=timeout)
        self.url = url
        self.heartbeat = heartbeat
        self.lost = asyncio.Event()
        self._conn: Any = None
        self._using = asyncio.Lock()  # one statement at a time on the session
        self._beats: asyncio.Task[None] | None = None

    @property
    def held(self) -> bool:
        return self._held and not self.lost.is_set()

    async def acquire(self, timeout: float | None = None, *, blocking: bool = True) -> bool:
        if self._held:
            raise LockError(f"lock {self.name!r} is already held by this object")
        limit = self.timeout if timeout is None else timeout
        wait = 0.0 if not blocking else (math.inf if limit is None else limit)
        if self._conn is not None and self._broken():
            self._abandon()
        if self._conn is None:
            self._conn = await self._connect()
        try:
            async with self._using:
                got = await self._wait_for_lock(wait)
        except BaseException:
            # Cancelled or failed mid-wait: the server may still grant the lock to this
            # session after we stop listening. Dropping the session frees it.
            self._abandon()
            raise
        self._held = got
        if got:
            self.lost.clear()
            if self.heartbeat is not None:
                self._beats = asyncio.create_task(self._beat(), name=f"heartbeat {self.name}")
        return got

    async def release(self) -> None:
        await self._stop_beating()
        async with self._using:
            await super().release()

    async def _beat(self) -> None:
        assert self.heartbeat is not None
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                async with self._using:
                    still = await self._still_held()
            except Exception:
                still = False
            if not still:
                logger.warning("lock %r: the session holding it is gone or lost it", self.name)
                self.lost.set()
                return

    async def _stop_beating(self) -> None:
        if self._beats is not None:
            self._beats.cancel()
            await asyncio.gather(self._beats, return_exceptions=True)
            self._beats = None

    async def _try_acquire(self) -> bool:
        return await self._wait_for_lock(0.0)

    async def close(self) -> None:
        """Close the lock's connection (which frees the lock if still held)."""
        await self._stop_beating()
        conn, self._conn, self._held = self._conn, None, False
        if conn is not None:
            await self._disconnect(conn)

    def _abandon(self) -> None:
        """Drop the connection at once, without a goodbye (frees any lock it holds)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._hang_up(conn)

    async def _wait_for_lock(self, wait: float) -> bool:
        raise NotImplementedError

    async def _still_held(self) -> bool:
        raise NotImplementedError

    async def _connect(self) -> Any:
        raise NotImplementedError

    async def _disconnect(self, conn: Any) -> None:
        raise NotImplementedError

    def _broken(self) -> bool:
        raise NotImplementedError

    def _hang_up(self, conn: Any) -> None:
        raise NotImplementedError


class MariaDBLock(_SessionLock):
    """`GET_LOCK(name, timeout)` on MariaDB or MySQL (names up to 64 characters)."""

    def __init__(
        self, url: str, name: str, *, timeout: float | None = None, heartbeat: float | None = 5.0
    ) -> None:
        if len(name) > _GET_LOCK_MAX_NAME:
            raise ValueError(f"MariaDB lock names are at most 64 characters: {name!r}")
        super().__init__(url, name, timeout=timeout, heartbeat=heartbeat)

    async def _connect(self) -> Any:
        return await mariadb.connect(self.url, autocommit=True)

    async def _disconnect(self, conn: Any) -> None:
        await conn.ensure_closed()

    def _broken(self) -> bool:
        return not self._conn.connected or bool(getattr(self._conn, "_stream_broken", False))

    def _hang_up(self, conn: Any) -> None:
        conn.close()

    async def _wait_for_lock(self, wait: float) -> bool:
        seconds = _A_YEAR if math.isinf(wait) else wait  # MariaDB refuses a negative one
        async with self._conn.cursor() as cur:
            await cur.execute("SELECT GET_LOCK(%s, %s)", (self.name, seconds))
            (got,) = await cur.fetchone()
        if got is None:
            raise LockError(f"GET_LOCK({self.name!r}) failed in the server (it returned NULL)")
        return got == 1

    async def _still_held(self) -> bool:
        async with self._conn.cursor() as cur:
            await cur.execute("SELECT IS_USED_LOCK(%s) = CONNECTION_ID()", (self.name,))
            (mine,) = await cur.fetchone()
        return mine == 1

    async def _release(self) -> None:
        try:
            async with self._conn.cursor() as cur:
                await cur.execute("SELECT RELEASE_LOCK(%s)", (self.name,))
                (released,) = await cur.fetchone()
        except Exception as exc:
            raise LockLost(f"lock {self.name!r}: the connection holding it failed: {exc}") from exc
        if released != 1:
            raise LockLost(f"lock {self.name!r} was not held by this session at release()")


class PostgresLock(_SessionLock):
    """A session advisory lock on PostgreSQL, keyed by a 64-bit hash of the name."""

    async def _connect(self) -> Any:
        return await postgres.connect(self.url, autocommit=True)

    async def _disconnect(self, conn: Any) -> None:
        await conn.close()

    def _broken(self) -> bool:
        return bool(self._conn.closed or self._conn.broken)

    def _hang_up(self, conn: Any) -> None:
        conn.pgconn.finish()

    async def _wait_for_lock(self, wait: float) -> bool:
        key = "hashtextextended(%s, 0)"
        if wait <= 0:
            cur = await self._conn.execute(f"SELECT pg_try_advisory_lock({key})", (self.name,))
            (got,) = await cur.fetchone()
            return bool(got)
        timeout = "0" if math.isinf(wait) else str(max(1, int(wait * 1000)))  # 0 = none
        await self._conn.execute(f"SET lock_timeout = {timeout}")
        try:
            await self._conn.execute(f"SELECT pg_advisory_lock({key})", (self.name,))
        except pg_errors.LockNotAvailable:
            return False
        return True

    async def _still_held(self) -> bool:
        # A 64-bit advisory key shows in pg_locks as classid (high 32 bits) and objid
        # (low 32 bits), objsubid 1.
        cur = await self._conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks, (SELECT hashtextextended(%s, 0) AS k) key"
            " WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted"
            " AND objsubid = 1 AND classid::bigint = (k >> 32) & 4294967295"
            " AND objid::bigint = k & 4294967295)",
            (self.name,),
        )
        (mine,) = await cur.fetchone()
        return bool(mine)

    async def _release(self) -> None:
        try:
            cur = await self._conn.execute(
                "SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (self.name,)
            )
            (released,) = await cur.fetchone()
        except psycopg.Error as exc:
            raise LockLost(f"lock {self.name!r}: the connection holding it failed: {exc}") from exc
        if not released:
            raise LockLost(f"lock {self.name!r} was not held by this session at release()")
