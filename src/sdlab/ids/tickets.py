"""Flickr's ticket servers: two MariaDB servers whose auto-increment steps by 2, one
starting at 1 and one at 2, so their ids never collide; a client alternates between
them and, if one is down, takes ids from the other.

    servers = TicketServers([url_a, url_b])
    await servers.create()
    await servers.next_id()

Each ticket is `REPLACE INTO tickets64 (stub) VALUES ('a')` and `SELECT LAST_INSERT_ID()`
on the same connection: the table keeps a single row; the counter lives in it.
Flickr set `auto_increment_increment` and `auto_increment_offset` in each server's
configuration; here each connection sets them for its session (server i gets offset i),
so any MariaDB servers will do, and even two databases on one server (`tickets_1`,
`tickets_2`) give the same ids, for trying it out.
"""

from __future__ import annotations

import itertools
from typing import Any

from sdlab.infra.service import describe
from sdlab.pool import MariaDB, Pool


class NoTicketServer(RuntimeError):
    """No ticket server answered."""


class TicketServers:
    def __init__(self, urls: list[str], *, timeout: float = 2.0) -> None:
        self.urls = urls
        step = len(urls)

        def session(offset: int) -> Any:
            async def configure(conn: Any) -> None:
                async with conn.cursor() as cur:
                    await cur.execute(
                        "SET SESSION auto_increment_increment = %s, auto_increment_offset = %s",
                        (step, offset),
                    )

            return configure

        self.pools: list[Pool[Any]] = [
            Pool(MariaDB(url, autocommit=True), min_size=0, max_size=4, timeout=timeout,
                 reconnect_timeout=timeout, configure=session(i + 1), name=f"tickets-{i + 1}")
            for i, url in enumerate(urls)
        ]  # fmt: skip
        self._turn = itertools.cycle(range(len(urls)))

    async def create(self) -> None:
        for i, pool in enumerate(self.pools, 1):
            async with pool.connection() as conn, conn.cursor() as cur:
                await cur.execute("SET SESSION sql_notes = 0")  # no "already exists" notes
                await cur.execute(f"CREATE DATABASE IF NOT EXISTS tickets_{i}")
                await cur.execute(
                    f"CREATE TABLE IF NOT EXISTS tickets_{i}.tickets64 ("
                    " id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,"
                    " stub CHAR(1) NOT NULL UNIQUE) ENGINE=InnoDB"
                )

    async def next_id(self) -> int:
        """A ticket from the next server in turn, or from the other if it fails."""
        errors = []
        for _ in range(len(self.pools)):
            index = next(self._turn)
            try:
                return await self._ticket(index)
            except Exception as exc:
                errors.append(f"{self.urls[index]}: {describe(exc)}")
        raise NoTicketServer("no ticket server answered: " + "; ".join(errors))

    async def close(self) -> None:
        for pool in self.pools:
            await pool.close()

    async def _ticket(self, index: int) -> int:
        async with self.pools[index].connection() as conn, conn.cursor() as cur:
            await cur.execute(f"REPLACE INTO tickets_{index + 1}.tickets64 (stub) VALUES ('a')")
            await cur.execute("SELECT LAST_INSERT_ID()")
            (value,) = await cur.fetchone()
        return int(value)
