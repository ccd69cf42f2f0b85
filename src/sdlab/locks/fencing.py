"""A resource that checks fencing tokens: the half of lock safety no lock can provide.

A lock holder can stall past its TTL and resume believing it still holds the lock
(Kleppmann, "How to do distributed locking", 2016). The fix is on the resource's side:
every write carries the token of the acquisition it was made under, and the resource
refuses a token lower than one it has already seen.

    store = FencedStore(db)                   # a sdlab.sql.Database on MariaDB
    await store.create()
    async with RedisLock(client, "report") as lock:
        await store.write("report", "v2", token=lock.fence)   # StaleToken if overtaken
"""

from __future__ import annotations

from sdlab import sql
from sdlab.locks.lock import StaleToken


class FencedStore:
    """Rows of (resource, token, value) in MariaDB; a write needs token >= the row's."""

    def __init__(self, db: sql.Database, table: str = "fenced_resources") -> None:
        self.db = db
        self.table = sql.identifier(table)
        self._quoted = db.dialect.quote(table)

    async def create(self) -> None:
        """Create the table if it is missing."""
        await self.db.execute(
            f"CREATE TABLE IF NOT EXISTS {self._quoted} ("
            " resource VARCHAR(191) PRIMARY KEY,"
            " token BIGINT NOT NULL,"
            " value LONGTEXT,"
            " written_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)"
            ") ENGINE=InnoDB"
        )

    async def write(self, resource: str, value: str, *, token: int) -> None:
        """Store `value` if `token` is at least the last token seen for `resource`
        (the same holder may write twice); raise StaleToken otherwise."""
        # One transaction: the check and the write must not be split by another writer.
        async with self.db.transaction() as tx:
            ensure_row = self.db.dialect.insert_ignore(
                self.table, ["resource", "token"], key=["resource"]
            )
            await tx.execute(ensure_row, (resource, 0))  # so that it can be locked
            last = await tx.fetchval(
                f"SELECT token FROM {self._quoted} WHERE resource = %s FOR UPDATE", (resource,)
            )
            if token < last:
                raise StaleToken(  # the block's error rolls the transaction back
                    f"{resource!r} was already written under fencing token {last}; "
                    f"token {token} belongs to an earlier holder"
                )
            await tx.execute(
                f"UPDATE {self._quoted} SET token = %s, value = %s, "
                "written_at = CURRENT_TIMESTAMP(6) WHERE resource = %s",
                (token, value, resource),
            )

    async def read(self, resource: str) -> tuple[int, str | None] | None:
        """(token, value) of the last accepted write, or None if never written."""
        row = await self.db.fetchone(
            f"SELECT token, value FROM {self._quoted} WHERE resource = %s", (resource,)
        )
        return None if row is None else (int(row[0]), row[1])
