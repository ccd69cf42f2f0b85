"""Flickr's ticket servers: two MariaDB servers whose auto-increment steps by 2, one
starting at 1 and one at 2, so their ids never collide; a client alternates between
them and, if one is down or hung, takes ids from the other.

    servers = TicketServers(["mysql://root@db1:3306/tickets", "mysql://root@db2:3306/tickets"])
    await servers.create()       # once: gives each server its offset, in the server
    await servers.next_id()

Each ticket is `REPLACE INTO tickets64 (stub) VALUES ('a')` and `SELECT LAST_INSERT_ID()`
on the same connection: the table keeps a single row; the counter lives in it.

Flickr set `auto_increment_increment` and `auto_increment_offset` in each server's
configuration. Here each server's database holds its step and offset (`ticket_config`,
written once by `create()`, never changed), and every connection sets them for its
session from there. So the offsets belong to the servers, not to the order in which a
client lists them, and any MariaDB servers will do (even two databases on one server,
for trying it out). The database is the URL's path (default `tickets`).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sdlab.infra.service import describe
from sdlab.infra.services import mariadb
from sdlab.pool import MariaDB, Pool

SKIP_AFTER_FAILURE = 1.0  # seconds a failed server is left out of the rotation


class NoTicketServer(RuntimeError):
    """No ticket server answered."""


class TicketServers:
    """`urls`: the ticket servers, each `mysql://.../<database>`. `timeout`: seconds one
    ticket may take before the client moves to the next server."""

    def __init__(self, urls: list[str], *, timeout: float = 2.0) -> None:
        if not urls:
            raise ValueError("need at least one ticket server")
        self.urls = [_with_database(url) for url in urls]
        self.timeout = timeout
        self.pools: list[Pool[Any]] = [
            Pool(MariaDB(url, autocommit=True), min_size=0, max_size=4, timeout=timeout,
                 reconnect_timeout=timeout, configure=_session_offsets, name=f"tickets-{i + 1}")
            for i, url in enumerate(self.urls)
        ]  # fmt: skip
        self._turn = itertools.cycle(range(len(urls)))
        self._skip_until = [0.0] * len(urls)

    async def create(self) -> None:
        """Create each server's database and tables; give server i (from 1) the offset i
        and the step len(urls), unless it already has them."""
        for i, url in enumerate(self.urls, 1):
            database = urlsplit(url).path.strip("/")
            admin = await mariadb.connect(_without_database(url), autocommit=True)
            try:
                async with admin.cursor() as cur:
                    await cur.execute("SET SESSION sql_notes = 0")  # no "already exists" notes
                    await cur.execute(f"CREATE DATABASE IF NOT EXISTS `{database}`")
                    await cur.execute(
                        f"CREATE TABLE IF NOT EXISTS `{database}`.tickets64 ("
                        " id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,"
                        " stub CHAR(1) NOT NULL UNIQUE) ENGINE=InnoDB"
                    )
                    await cur.execute(
                        f"CREATE TABLE IF NOT EXISTS `{database}`.ticket_config ("
                        " id TINYINT PRIMARY KEY, step INT NOT NULL, `offset` INT NOT NULL)"
                    )
                    await cur.execute(
                        f"INSERT INTO `{database}`.ticket_config VALUES (1, %s, %s) "
                        "ON DUPLICATE KEY UPDATE id = id",
                        (len(self.urls), i),
                    )
            finally:
                await admin.ensure_closed()

    async def next_id(self) -> int:
        """A ticket from the next server in turn; if it fails or hangs past `timeout`,
        from the next one (a failed server sits out for a second)."""
        errors = []
        now = time.monotonic()
        first, count = next(self._turn), len(self.pools)
        order = [(first + k) % count for k in range(count)]
        order.sort(key=lambda i: self._skip_until[i] > now)  # healthy ones first, in turn
        for index in order:
            try:
                async with asyncio.timeout(self.timeout):
                    return await self._ticket(index)
            except Exception as exc:
                self._skip_until[index] = time.monotonic() + SKIP_AFTER_FAILURE
                what = "no answer" if isinstance(exc, TimeoutError) else describe(exc)
                errors.append(f"{self.urls[index]}: {what}")
        raise NoTicketServer("no ticket server answered: " + "; ".join(errors))

    async def close(self) -> None:
        for pool in self.pools:
            await pool.close()

    async def _ticket(self, index: int) -> int:
        async with self.pools[index].connection() as conn, conn.cursor() as cur:
            await cur.execute("REPLACE INTO tickets64 (stub) VALUES ('a')")
            await cur.execute("SELECT LAST_INSERT_ID()")
            (value,) = await cur.fetchone()
        return int(value)


async def _session_offsets(conn: Any) -> None:
    """Every connection counts with its server's own step and offset."""
    async with conn.cursor() as cur:
        await cur.execute("SELECT step, `offset` FROM ticket_config WHERE id = 1")
        row = await cur.fetchone()
        if row is None:
            raise NoTicketServer("this server has no ticket_config: run create() first")
        await cur.execute(
            "SET SESSION auto_increment_increment = %s, auto_increment_offset = %s", row
        )


def _with_database(url: str) -> str:
    parts = urlsplit(url)
    return url if parts.path.strip("/") else urlunsplit(parts._replace(path="/tickets"))


def _without_database(url: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/"))
