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

from sdlab import sql
from sdlab.failure import describe

SKIP_AFTER_FAILURE = 1.0  # seconds a failed server is left out of the rotation
DEFAULT_DATABASE = "tickets"

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS tickets64 ("
    " id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,"
    " stub CHAR(1) NOT NULL UNIQUE) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS ticket_config ("
    " id TINYINT PRIMARY KEY, step INT NOT NULL, `offset` INT NOT NULL)",
]


class NoTicketServer(RuntimeError):
    """No ticket server answered."""


class TicketServers:
    """`urls`: the ticket servers, each `mysql://.../<database>`. `timeout`: seconds one
    ticket may take before the client moves to the next server."""

    def __init__(self, urls: list[str], *, timeout: float = 2.0) -> None:
        if not urls:
            raise ValueError("need at least one ticket server")
        self.urls = [
            url if sql.database_of(url) else sql.with_database(url, DEFAULT_DATABASE)
            for url in urls
        ]
        self.timeout = timeout
        self.servers = [
            sql.Database(url, isolation=None, configure=_session_offsets, min_size=0,
                         max_size=4, timeout=timeout, reconnect_timeout=timeout,
                         name=f"tickets-{i + 1}")
            for i, url in enumerate(self.urls)
        ]  # fmt: skip
        self._turn = itertools.cycle(range(len(urls)))
        self._skip_until = [0.0] * len(urls)

    async def create(self) -> None:
        """Create each server's database and tables; give server i (from 1) the offset i
        and the step len(urls), unless it already has them."""
        for i, url in enumerate(self.urls, 1):
            await sql.ensure_database(url)
            session = await sql.connect(url, isolation=None)
            try:
                await sql.ensure_schema(session, _SCHEMA, lock="tickets")
                config = session.dialect.insert_ignore(
                    "ticket_config", ["id", "step", "offset"], key=["id"]
                )
                await session.execute(config, (1, len(self.urls), i))
            finally:
                await session.close()

    async def next_id(self) -> int:
        """A ticket from the next server in turn; if it fails or hangs past `timeout`,
        from the next one (a failed server sits out for a second)."""
        errors = []
        now = time.monotonic()
        first, count = next(self._turn), len(self.servers)
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
        for server in self.servers:
            await server.close()

    async def _ticket(self, index: int) -> int:
        async with self.servers[index].session() as session:  # LAST_INSERT_ID() is per session
            await session.execute("REPLACE INTO tickets64 (stub) VALUES ('a')")
            return int(await session.fetchval("SELECT LAST_INSERT_ID()"))


async def _session_offsets(session: sql.Session) -> None:
    """Every session counts with its server's own step and offset."""
    row = await session.fetchone("SELECT step, `offset` FROM ticket_config WHERE id = 1")
    if row is None:
        raise NoTicketServer("this server has no ticket_config: run create() first")
    await session.run("SET SESSION auto_increment_increment = %s, auto_increment_offset = %s", row)
