"""A resource that checks fencing tokens: the half of lock safety no lock can provide.

A lock holder can stall past its TTL and resume believing it still holds the lock
(Kleppmann, "How to do distributed locking", 2016). The fix is on the resource's side:
every write carries the token of the acquisition it was made under, and the resource
refuses a token lower than one it has already seen.

    store = FencedStore(pool)                 # a sdlab.pool.Pool of MariaDB connections
    await store.create()
    async with RedisLock(client, "report") as lock:
        await store.write("report", "v2", token=lock.fence)   # StaleToken if overtaken
"""

from __future__ import annotations

import re
from typing import Any

from sdlab.locks.lock import StaleToken
from sdlab.pool import Pool

_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class FencedStore:
    """Rows of (resource, token, value) in MariaDB; a write needs token >= the row's."""

    def __init__(self, pool: Pool[Any], table: str = "fenced_resources") -> None:
        if not _TABLE.match(table):
            raise ValueError(f"not a plain table name: {table!r}")
        self.pool = pool
        self.table = table

    async def create(self) -> None:
        """Create the table if it is missing."""
        async with self.pool.connection() as conn, conn.cursor() as cur:
            await cur.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} ("
                " resource VARCHAR(191) PRIMARY KEY,"
                " token BIGINT NOT NULL,"
                " value LONGTEXT,"
                " written_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)"
                ") ENGINE=InnoDB"
            )
            await conn.commit()

    async def write(self, resource: str, value: str, *, token: int) -> None:
        """Store `value` if `token` is at least the last token seen for `resource`
        (the same holder may write twice); raise StaleToken otherwise."""
        async with self.pool.connection() as conn, conn.cursor() as cur:
            await conn.begin()  # explicit: the check and the write must be one transaction
            await cur.execute(  # make sure the row exists (no warning, unlike INSERT IGNORE)
                f"INSERT INTO {self.table} (resource, token) VALUES (%s, 0) "
                "ON DUPLICATE KEY UPDATE resource = resource",
                (resource,),
            )
            await cur.execute(
                f"SELECT token FROM {self.table} WHERE resource = %s FOR UPDATE", (resource,)
            )
            (last,) = await cur.fetchone()
            if token < last:
                await conn.rollback()
                raise StaleToken(
                    f"{resource!r} was already written under fencing token {last}; "
                    f"token {token} belongs to an earlier holder"
                )
            await cur.execute(
                f"UPDATE {self.table} SET token = %s, value = %s, "
                "written_at = CURRENT_TIMESTAMP(6) WHERE resource = %s",
                (token, value, resource),
            )
            await conn.commit()

    async def read(self, resource: str) -> tuple[int, str | None] | None:
        """(token, value) of the last accepted write, or None if never written."""
        async with self.pool.connection() as conn, conn.cursor() as cur:
            await cur.execute(
                f"SELECT token, value FROM {self.table} WHERE resource = %s", (resource,)
            )
            row = await cur.fetchone()
            await conn.commit()
        return None if row is None else (int(row[0]), row[1])
