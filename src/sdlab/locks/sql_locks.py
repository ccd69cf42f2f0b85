"""Locks the database already has: MariaDB `GET_LOCK` and PostgreSQL advisory locks.

Both are held by a database session, so each lock object keeps a session of its own
(`sdlab.sql.connect()`, not pooled), opened on first use. Waiting happens in the server
(no polling), and a crashed holder's lock is freed the moment the server sees its
connection close. There is no TTL: a holder that stalls keeps the lock for as long as
its connection lives. A heartbeat (every 5 s by default) tells a holder whose session
ended, or lost the lock, by setting `lost`. Neither gives a fencing token.
"""

from __future__ import annotations

import asyncio
import logging
import math

from sdlab import sql
from sdlab.locks.lock import Lock, LockError, LockLost

logger = logging.getLogger("sdlab.locks")

_GET_LOCK_MAX_NAME = 64  # MariaDB's limit on a user lock name
_A_YEAR = 365 * 24 * 3600


class _SessionLock(Lock):
    """Shared part: one session per lock object; server-side waits.

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
        self.session: sql.Session | None = None
        """The session holding (or waiting for) the lock; None until first used."""
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
        if self.session is not None and self.session.broken:
            self._abandon()
        if self.session is None:
            self.session = await sql.connect(self.url, isolation=None)
        try:
            async with self._using:
                got = await self._wait_for_lock(self.session, wait)
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
                    still = self.session is not None and await self._still_held(self.session)
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
        assert self.session is not None
        return await self._wait_for_lock(self.session, 0.0)

    async def _release(self) -> None:
        if self.session is None:
            raise LockLost(f"lock {self.name!r}: the session holding it was closed")
        try:
            released = await self._unlock(self.session)
        except sql.SQLError as exc:
            raise LockLost(f"lock {self.name!r}: the session holding it failed: {exc}") from exc
        if not released:
            raise LockLost(f"lock {self.name!r} was not held by this session at release()")

    async def close(self) -> None:
        """Close the lock's session (which frees the lock if still held)."""
        await self._stop_beating()
        session, self.session, self._held = self.session, None, False
        if session is not None:
            await session.close()

    def _abandon(self) -> None:
        """Drop the session at once, without a goodbye (frees any lock it holds)."""
        session, self.session = self.session, None
        if session is not None:
            session.abort()

    async def _wait_for_lock(self, session: sql.Session, wait: float) -> bool:
        """Wait in the server up to `wait` seconds (0: one try; inf: for ever)."""
        raise NotImplementedError

    async def _still_held(self, session: sql.Session) -> bool:
        raise NotImplementedError

    async def _unlock(self, session: sql.Session) -> bool:
        """Free the lock; False if this session did not hold it."""
        raise NotImplementedError


class MariaDBLock(_SessionLock):
    """`GET_LOCK(name, timeout)` on MariaDB or MySQL (names up to 64 characters)."""

    def __init__(
        self, url: str, name: str, *, timeout: float | None = None, heartbeat: float | None = 5.0
    ) -> None:
        if len(name) > _GET_LOCK_MAX_NAME:
            raise ValueError(f"MariaDB lock names are at most 64 characters: {name!r}")
        super().__init__(url, name, timeout=timeout, heartbeat=heartbeat)

    async def _wait_for_lock(self, session: sql.Session, wait: float) -> bool:
        seconds = _A_YEAR if math.isinf(wait) else wait  # MariaDB refuses a negative one
        got = await session.fetchval("SELECT GET_LOCK(%s, %s)", (self.name, seconds))
        if got is None:
            raise LockError(f"GET_LOCK({self.name!r}) failed in the server (it returned NULL)")
        return bool(got == 1)

    async def _still_held(self, session: sql.Session) -> bool:
        mine = await session.fetchval("SELECT IS_USED_LOCK(%s) = CONNECTION_ID()", (self.name,))
        return bool(mine == 1)

    async def _unlock(self, session: sql.Session) -> bool:
        return bool(await session.fetchval("SELECT RELEASE_LOCK(%s)", (self.name,)) == 1)


class PostgresLock(_SessionLock):
    """A session advisory lock on PostgreSQL, keyed by a 64-bit hash of the name."""

    async def _wait_for_lock(self, session: sql.Session, wait: float) -> bool:
        key = "hashtextextended(%s, 0)"
        if wait <= 0:
            return bool(await session.fetchval(f"SELECT pg_try_advisory_lock({key})", (self.name,)))
        timeout = "0" if math.isinf(wait) else str(max(1, int(wait * 1000)))  # 0 = none
        await session.run(f"SET lock_timeout = {timeout}")
        try:
            await session.run(f"SELECT pg_advisory_lock({key})", (self.name,))
        except sql.LockWaitTimeout:
            return False
        return True

    async def _still_held(self, session: sql.Session) -> bool:
        # A 64-bit advisory key shows in pg_locks as classid (high 32 bits) and objid
        # (low 32 bits), objsubid 1.
        mine = await session.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_locks, (SELECT hashtextextended(%s, 0) AS k) key"
            " WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted"
            " AND objsubid = 1 AND classid::bigint = (k >> 32) & 4294967295"
            " AND objid::bigint = k & 4294967295)",
            (self.name,),
        )
        return bool(mine)

    async def _unlock(self, session: sql.Session) -> bool:
        query = "SELECT pg_advisory_unlock(hashtextextended(%s, 0))"
        return bool(await session.fetchval(query, (self.name,)))
