"""MariaDB's Spider engine over the same shard servers, for comparison.

    async with Spider.over(head_server_url, [shard_db_url_0, shard_db_url_1]) as spider:
        await spider.load(rows)               # (id, name, email), routed by Spider
        await spider.get(user_id)             # one partition, by HASH(id)
        await spider.top(100)                 # ORDER BY name LIMIT 100 over both

Spider is a storage engine: a table on one server (the head) whose partitions are
tables on other servers, reached over the MySQL protocol. Its partitioning is MariaDB's
own (`PARTITION BY HASH (id)`: id mod N), not our routers', so it holds its own copy
of the users (`users_spider` on each shard server) beside ours. The head needs the
plugin (Debian package `mariadb-plugin-spider`), installed at run time with
`INSTALL SONAME 'ha_spider'`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any

from sdlab import sql
from sdlab.sharding.shardmap import ShardingError

HEAD_DATABASE = "sdlab_spider"
BACKEND_TABLE = "users_spider"


class SpiderUnavailable(ShardingError):
    """The Spider engine could not be set up on the head server."""


class Spider:
    def __init__(self, db: sql.Database) -> None:
        self.db = db

    @classmethod
    @asynccontextmanager
    async def over(cls, head_server: str, backends: Sequence[str]) -> AsyncIterator[Spider]:
        """A Spider table `users` on `head_server` (a server URL), one partition per
        backend database URL."""
        text = sql.MARIADB.binary_collation
        columns = (
            f"id BIGINT PRIMARY KEY, name VARCHAR(200) {text} NOT NULL, "
            f"email VARCHAR(320) {text} NOT NULL"
        )
        for url in backends:
            async with sql.Database(url, max_size=1) as db:
                await db.execute(f"DROP TABLE IF EXISTS {BACKEND_TABLE}")
                await db.execute(
                    f"CREATE TABLE {BACKEND_TABLE} ({columns}, INDEX by_name (name, id))"
                )
        head = sql.with_database(head_server, HEAD_DATABASE)
        admin = await sql.connect(sql.with_database(head_server, ""), isolation=None)
        try:
            await _install(admin)
            await admin.execute(f"CREATE DATABASE IF NOT EXISTS {HEAD_DATABASE}")
            partitions = []
            for i, url in enumerate(backends):
                parts = sql.address_of(url).rsplit(":", 1)
                await admin.execute(f"DROP SERVER IF EXISTS shard{i}")
                await admin.execute(
                    f"CREATE SERVER shard{i} FOREIGN DATA WRAPPER mysql OPTIONS (HOST "
                    f"'{parts[0]}', PORT {int(parts[1])}, USER 'root', "
                    f"DATABASE '{sql.database_of(url)}')"
                )
                partitions.append(f"PARTITION p{i} COMMENT = 'srv \"shard{i}\"'")
            await admin.execute(f"DROP TABLE IF EXISTS {HEAD_DATABASE}.users")
            await _retry(
                admin,
                f"CREATE TABLE {HEAD_DATABASE}.users ({columns}) ENGINE=SPIDER "
                f'COMMENT=\'wrapper "mysql", table "{BACKEND_TABLE}"\' '
                f"PARTITION BY HASH (id) ({', '.join(partitions)})",
            )
        except sql.SQLError as exc:
            raise SpiderUnavailable(f"{sql.address_of(head_server)}: {exc}") from exc
        finally:
            await admin.close()
        async with sql.Database(head, max_size=2) as db:
            yield cls(db)

    async def load(self, rows: Sequence[tuple[Any, ...]], batch: int = 500) -> None:
        """Insert through the head: Spider sends each row to its partition's server."""
        for start in range(0, len(rows), batch):
            part = rows[start : start + batch]
            statement = self.db.dialect.insert("users", ["id", "name", "email"], len(part))
            await self.db.execute(statement, [x for row in part for x in row])

    async def get(self, user_id: int) -> tuple[Any, ...] | None:
        return await self.db.fetchone("SELECT id, name, email FROM users WHERE id = %s", (user_id,))

    async def top(self, limit: int) -> list[int]:
        rows = await self.db.fetch(f"SELECT id FROM users ORDER BY name, id LIMIT {int(limit)}")
        return [int(user_id) for (user_id,) in rows]


async def _install(admin: sql.Session) -> None:
    installed = await admin.fetchval(
        "SELECT COUNT(*) FROM information_schema.engines WHERE engine = 'SPIDER' "
        "AND support IN ('YES', 'DEFAULT')"
    )
    if not installed:
        await admin.execute("INSTALL SONAME 'ha_spider'")


async def _retry(admin: sql.Session, statement: str, attempts: int = 20) -> None:
    """Spider creates its system tables in the background after INSTALL: the first
    statements may find them missing."""
    for attempt in range(attempts):
        try:
            await admin.execute(statement)
            return
        except sql.SQLError:
            if attempt == attempts - 1:
                raise
            with suppress(sql.SQLError):
                await admin.execute(f"DROP TABLE IF EXISTS {HEAD_DATABASE}.users")
            await asyncio.sleep(0.25)
