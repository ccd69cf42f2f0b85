"""The servers table in MariaDB or PostgreSQL: the truth that every process reads and changes.

Two tables: `<table>` (one row per server) and `<table>_clock` (one row, the last version
handed out). A change is one short transaction:

    UPDATE <table> SET status = ... WHERE server_id = ? AND status IN (allowed)   -- row lock
    UPDATE <table>_clock SET version = version + 1                                -- clock lock
    UPDATE <table> SET version = <new version> WHERE server_id = ?
    COMMIT

The clock row is locked until COMMIT, so the next change cannot take a version before
this one has committed: versions are handed out in commit order. A reader that has seen
version V has therefore seen every change up to V, and "everything with version > V" is
exactly what it has not seen. (A database sequence would not do: `nextval` is outside
the transaction, so version 11 can commit before 10, and a reader that moved on to 11
would never look for 10.) Every transaction locks a server row first and the clock
second, so two changes cannot deadlock.

Every session runs READ COMMITTED, whatever the database's default: the reads then see
only committed changes, and a change that queued on the clock row takes the version its
predecessor left. (Under PostgreSQL's REPEATABLE READ or SERIALIZABLE, the second of two
concurrent changes would fail to serialize instead of waiting its turn.)

The schedule of a creation is written when it starts: `next_at` (when the current status
ends) and `done_at`. Any process may advance a due row, and the `AND next_at <= now`
guard makes two processes racing for one transition produce one change, not two. Times
are the database's own clock, so processes on machines with different clocks agree.
"""

from __future__ import annotations

import contextlib
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncmy.errors
import psycopg

from sdlab.infra.services import mariadb, postgres
from sdlab.polling.model import (
    AlreadyCreated,
    CreationInProgress,
    Delays,
    PollingError,
    Server,
    Status,
    UnknownServer,
)
from sdlab.pool import MariaDB, Pool, PoolError, PostgreSQL

DEFAULT_TABLE = "ec2_servers"
DEFAULT_MYSQL_DATABASE = "sdlab_polling"
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")

# The statuses each request may change a server from.
_CREATE_FROM = (Status.NOT_YET_CREATED,)
_TERMINATE_FROM = (Status.DONE,)


class DatabaseUnavailable(PollingError):
    """The database did not answer when the store was opened."""


# What the drivers raise when the server is away (the pool's PoolTimeout says why).
DATABASE_ERRORS = (PoolError, asyncmy.errors.OperationalError, psycopg.OperationalError, OSError)


class Store(ABC):
    """The servers table of one database. Make one with `Store.connect(url)`."""

    dialect: str

    def __init__(self, pool: Pool[Any], table: str = DEFAULT_TABLE, database: str = "") -> None:
        if not _IDENTIFIER.match(table):
            raise ValueError(f"table name {table!r} must match {_IDENTIFIER.pattern}")
        self.pool = pool
        self.table = table
        self.database = database
        self.clock = f"{table}_clock"
        self.notify_channel: str | None = None
        """If set (PostgreSQL), every change sends NOTIFY on this channel inside its
        transaction: the notification goes out if and only if the change commits."""

    @staticmethod
    async def connect(url: str, table: str = DEFAULT_TABLE, *, pool_size: int = 4) -> Store:
        """Open a store on a `mysql://` (MariaDB, MySQL) or `postgresql://` URL and create
        its tables if missing. A MariaDB URL without a database uses `sdlab_polling`,
        created if needed."""
        if not _IDENTIFIER.match(table):
            raise ValueError(f"table name {table!r} must match {_IDENTIFIER.pattern}")
        scheme = urlsplit(url).scheme
        kind: type[MariaDBStore | PostgresStore]
        if scheme in ("mysql", "mariadb"):
            kind = MariaDBStore
        elif scheme in ("postgresql", "postgres"):
            kind = PostgresStore
        else:
            raise ValueError(
                f"database URL {url!r}: scheme should be mysql:// (MariaDB, MySQL) or postgresql://"
            )
        where = urlsplit(url).netloc.rpartition("@")[2]
        try:
            store: Store = await kind.open(url, table, pool_size)
        except DATABASE_ERRORS as exc:
            reason = " ".join(str(exc).split())  # drivers' messages span lines
            raise DatabaseUnavailable(f"{kind.dialect} at {where}: {reason}") from exc
        try:
            await store.create_schema()
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        await self.pool.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- reading ----------------------------------------------------------------------

    async def get(self, server_id: str) -> Server | None:
        rows = await self._select(f"WHERE server_id = {self._p}", (server_id,))
        return rows[0] if rows else None

    async def all(self) -> list[Server]:
        return await self._select("ORDER BY server_id", ())

    async def newest(self) -> int:
        """The table's newest version: the last one the clock handed out (0 if none)."""
        async with self.pool.connection() as conn:
            rows = await self._fetch(conn, f"SELECT version FROM {self.clock} WHERE id = 1", ())
        return int(rows[0][0]) if rows else 0

    async def changes_since(self, version: int, *, limit: int | None = None) -> list[Server]:
        """Servers whose last change is newer than `version`, oldest change first."""
        tail = f" LIMIT {int(limit)}" if limit else ""
        return await self._select(f"WHERE version > {self._p} ORDER BY version{tail}", (version,))

    # -- changing ---------------------------------------------------------------------

    async def add(self, server_ids: Sequence[str]) -> list[Server]:
        """Add the servers that do not exist yet, NOT_YET_CREATED; return those added.
        Safe to call from several processes at once (the clock lock serialises them)."""
        if not server_ids:
            return []
        async with self.pool.connection() as conn:
            return await self._add(conn, list(dict.fromkeys(server_ids)))

    async def create(self, server_id: str, delays: Delays) -> Server:
        """NOT_YET_CREATED -> TO_DO, with IN_PROGRESS due after `delays.to_do` seconds and
        DONE after `delays.in_progress` more. Raises UnknownServer, CreationInProgress,
        AlreadyCreated."""
        schedule = (delays.to_do, delays.to_do + delays.in_progress)
        while True:
            changed = await self._change(server_id, _CREATE_FROM, Status.TO_DO, schedule=schedule)
            if changed is not None:
                return changed
            server = await self._refused(server_id)
            if server.status is Status.DONE:
                raise AlreadyCreated(server)
            # NOT_YET_CREATED again: created, finished and terminated since our UPDATE.

    async def terminate(self, server_id: str) -> Server:
        """DONE -> NOT_YET_CREATED (a terminated server can be created again). A server
        that is NOT_YET_CREATED is returned as it is. Raises UnknownServer,
        CreationInProgress."""
        changed = await self._change(server_id, _TERMINATE_FROM, Status.NOT_YET_CREATED)
        return changed or await self._refused(server_id)

    async def _refused(self, server_id: str) -> Server:
        """The server now, after a change to it was refused: UnknownServer if there is
        none, CreationInProgress while a creation is under way."""
        server = await self.get(server_id)
        if server is None:
            raise UnknownServer(server_id)
        if server.status.in_progress:
            raise CreationInProgress(server)
        return server

    async def advance_due(
        self, on_change: Callable[[Server], object] | None = None
    ) -> list[Server]:
        """Make every transition whose time has come, one transaction each; return the
        changes this call made (another process may have made some of them first).
        `on_change(server)` is called with each as soon as it has committed."""
        async with self.pool.connection() as conn:
            due = await self._fetch(
                conn,
                f"SELECT server_id, status FROM {self.table} "
                f"WHERE next_at <= {self._now} ORDER BY next_at LIMIT 1000",
                (),
            )
        made = []
        for server_id, status in due:
            then = Status(status).next
            if then is None:
                continue
            changed = await self._change(server_id, (Status(status),), then, due_only=True)
            if changed is not None:
                made.append(changed)
                if on_change is not None:
                    on_change(changed)
        return made

    async def seconds_until_due(self) -> float | None:
        """Seconds until the next scheduled transition (<= 0: one is due now); None if no
        creation is under way."""
        async with self.pool.connection() as conn:
            rows = await self._fetch(conn, self._until_due_sql(), ())
        value = rows[0][0] if rows else None
        return None if value is None else float(value)

    async def drop(self) -> None:
        """Drop both tables (tests and experiments clean up with it)."""
        async with self.pool.connection() as conn:
            await self._execute(conn, f"DROP TABLE IF EXISTS {self.table}, {self.clock}", ())

    # -- one change ---------------------------------------------------------------------

    async def _change(
        self,
        server_id: str,
        allowed: tuple[Status, ...],
        to: Status,
        *,
        schedule: tuple[float, float] | None = None,
        due_only: bool = False,
    ) -> Server | None:
        """The transaction in the module docstring; None if the row was not in an allowed
        status (or, with `due_only`, not yet due)."""
        marks = ", ".join([self._p] * len(allowed))
        if schedule is not None:  # a new creation: write its whole schedule
            timing = (
                f"next_at = {self._later(self._p)}, done_at = {self._later(self._p)}",
                schedule,
            )
        elif to is Status.IN_PROGRESS:  # the rest of the schedule is already in the row
            timing = ("next_at = done_at", ())
        else:
            timing = ("next_at = NULL, done_at = NULL", ())
        guard = f" AND next_at <= {self._now}" if due_only else ""
        async with self.pool.connection() as conn:
            async with self._transaction(conn):
                updated = await self._execute(
                    conn,
                    f"UPDATE {self.table} SET status = {self._p}, changed_at = {self._now}, "
                    f"{timing[0]} WHERE server_id = {self._p} AND status IN ({marks}){guard}",
                    (to.value, *timing[1], server_id, *(s.value for s in allowed)),
                )
                if updated == 0:
                    return None
                version = await self._next_version(conn, 1)
                await self._execute(
                    conn,
                    f"UPDATE {self.table} SET version = {self._p} WHERE server_id = {self._p}",
                    (version, server_id),
                )
                (server,) = await self._select_in(
                    conn, f"WHERE server_id = {self._p}", (server_id,)
                )
                await self._notify(conn, version)
            return server

    async def _add(self, conn: Any, server_ids: list[str]) -> list[Server]:
        marks = ", ".join([self._p] * len(server_ids))
        async with self._transaction(conn):
            await self._fetch(conn, f"SELECT version FROM {self.clock} WHERE id = 1 FOR UPDATE", ())
            present = {
                row[0]
                for row in await self._fetch(
                    conn,
                    f"SELECT server_id FROM {self.table} WHERE server_id IN ({marks})",
                    server_ids,
                )
            }
            missing = [s for s in server_ids if s not in present]
            if not missing:
                return []
            last = await self._next_version(conn, len(missing))
            for offset, server_id in enumerate(missing):
                await self._execute(
                    conn,
                    f"INSERT INTO {self.table} (server_id, status, version, changed_at) "
                    f"VALUES ({self._p}, {self._p}, {self._p}, {self._now})",
                    (server_id, Status.NOT_YET_CREATED.value, last - len(missing) + 1 + offset),
                )
            added = await self._select_in(
                conn, f"WHERE server_id IN ({', '.join([self._p] * len(missing))})", missing
            )
            await self._notify(conn, last)
        return sorted(added, key=lambda s: s.version)

    async def _select(self, where: str, params: Sequence[Any]) -> list[Server]:
        async with self.pool.connection() as conn:
            return await self._select_in(conn, where, params)

    async def _select_in(self, conn: Any, where: str, params: Sequence[Any]) -> list[Server]:
        rows = await self._fetch(
            conn, f"SELECT server_id, status, version, changed_at FROM {self.table} {where}", params
        )
        return [Server.from_row(*row) for row in rows]

    # -- what differs between the databases -----------------------------------------------

    _p = "%s"  # both drivers take %s placeholders

    @property
    @abstractmethod
    def _now(self) -> str:
        """SQL for the database's current time, to the microsecond."""

    @abstractmethod
    def _later(self, seconds: str) -> str:
        """SQL for the current time plus `seconds`."""

    @abstractmethod
    def _until_due_sql(self) -> str: ...

    @abstractmethod
    def _transaction(self, conn: Any) -> Any:
        """An async context manager: BEGIN, then COMMIT (ROLLBACK on an exception)."""

    @abstractmethod
    async def _execute(self, conn: Any, sql: str, params: Sequence[Any]) -> int:
        """Run a statement; return the number of rows it changed."""

    @abstractmethod
    async def _fetch(self, conn: Any, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    async def _next_version(self, conn: Any, count: int) -> int:
        """Advance the clock by `count` (inside the caller's transaction, which keeps the
        clock row locked until it ends); return the last version taken."""

    @abstractmethod
    async def create_schema(self) -> None:
        """Create both tables and the clock row, if missing."""

    @abstractmethod
    async def _notify(self, conn: Any, version: int) -> None:
        """Announce the change inside its transaction, if this store does that."""


class MariaDBStore(Store):
    """MariaDB or MySQL through asyncmy. Sessions run in UTC; `TIMESTAMP(6)` columns."""

    dialect = "mariadb"
    _now = "NOW(6)"

    @classmethod
    async def open(cls, url: str, table: str, pool_size: int) -> MariaDBStore:
        parts = urlsplit(url)
        if not parts.path.strip("/"):
            admin = await mariadb.connect(url, autocommit=True)
            try:
                async with admin.cursor() as cur:
                    await cur.execute("SET SESSION sql_notes = 0")
                    await cur.execute(f"CREATE DATABASE IF NOT EXISTS {DEFAULT_MYSQL_DATABASE}")
            finally:
                await admin.ensure_closed()
            parts = parts._replace(path=f"/{DEFAULT_MYSQL_DATABASE}")
            url = urlunsplit(parts)

        async def utc(conn: Any) -> None:
            async with conn.cursor() as cur:
                await cur.execute("SET SESSION time_zone = '+00:00', sql_notes = 0")
                await cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")

        pool = await _open(MariaDB(url, autocommit=True), table, pool_size, utc)
        return cls(pool, table, parts.path.strip("/"))

    def _later(self, seconds: str) -> str:
        return f"NOW(6) + INTERVAL ROUND({seconds} * 1000000) MICROSECOND"

    def _until_due_sql(self) -> str:
        return f"SELECT TIMESTAMPDIFF(MICROSECOND, NOW(6), MIN(next_at)) / 1e6 FROM {self.table}"

    def _transaction(self, conn: Any) -> Any:
        return _MariaDBTransaction(conn)

    async def _execute(self, conn: Any, sql: str, params: Sequence[Any]) -> int:
        async with conn.cursor() as cur:
            return int(await cur.execute(sql, tuple(params)))

    async def _fetch(self, conn: Any, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        async with conn.cursor() as cur:
            await cur.execute(sql, tuple(params))
            return list(await cur.fetchall())

    async def _next_version(self, conn: Any, count: int) -> int:
        # LAST_INSERT_ID(expr) hands the new value back in the OK packet: no SELECT.
        async with conn.cursor() as cur:
            await cur.execute(
                f"UPDATE {self.clock} SET version = LAST_INSERT_ID(version + %s) WHERE id = 1",
                (count,),
            )
            return int(cur.lastrowid)

    async def _notify(self, conn: Any, version: int) -> None:
        """Nothing: the fleet publishes on Redis after the commit."""

    async def create_schema(self) -> None:
        async with self.pool.connection() as conn, conn.cursor() as cur:
            await cur.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} ("
                " server_id VARCHAR(64) NOT NULL PRIMARY KEY,"
                " status VARCHAR(16) NOT NULL,"
                " version BIGINT NOT NULL,"
                " changed_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),"
                " next_at TIMESTAMP(6) NULL DEFAULT NULL,"
                " done_at TIMESTAMP(6) NULL DEFAULT NULL,"
                " KEY by_version (version), KEY by_next_at (next_at)"
                ") ENGINE=InnoDB"
            )
            await cur.execute(
                f"CREATE TABLE IF NOT EXISTS {self.clock} ("
                " id TINYINT NOT NULL PRIMARY KEY, version BIGINT NOT NULL) ENGINE=InnoDB"
            )
            await cur.execute(
                f"INSERT INTO {self.clock} VALUES (1, 0) ON DUPLICATE KEY UPDATE id = id"
            )


class _MariaDBTransaction:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def __aenter__(self) -> None:
        await self.conn.begin()

    async def __aexit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            await self.conn.commit()
            return
        # The error being handled is the one to raise, not the rollback's: a cancelled
        # query closes asyncmy's connection, and its rollback would turn the
        # CancelledError into an OperationalError that a retry loop swallows. (The
        # server rolls back a closed session; the pool discards or rolls back the rest.)
        with contextlib.suppress(Exception):
            await self.conn.rollback()


class PostgresStore(Store):
    """PostgreSQL through psycopg 3. `timestamptz` columns; NOTIFY can ride on the change."""

    dialect = "postgresql"
    _now = "clock_timestamp()"

    @classmethod
    async def open(cls, url: str, table: str, pool_size: int) -> PostgresStore:
        # One connection first: a server that is away fails here, at once and plainly,
        # instead of in the pool's retries.
        probe = await postgres.connect(url, connect_timeout=5)
        await probe.close()

        async def read_committed(conn: Any) -> None:
            await conn.set_isolation_level(psycopg.IsolationLevel.READ_COMMITTED)

        pool = await _open(PostgreSQL(url, autocommit=True), table, pool_size, read_committed)
        return cls(pool, table, urlsplit(url).path.strip("/"))

    def _later(self, seconds: str) -> str:
        return f"clock_timestamp() + make_interval(secs => {seconds})"

    def _until_due_sql(self) -> str:
        return f"SELECT EXTRACT(EPOCH FROM MIN(next_at) - clock_timestamp()) FROM {self.table}"

    def _transaction(self, conn: Any) -> Any:
        return conn.transaction()

    async def _execute(self, conn: Any, sql: str, params: Sequence[Any]) -> int:
        cur = await conn.execute(sql, tuple(params))
        return int(cur.rowcount)

    async def _fetch(self, conn: Any, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        cur = await conn.execute(sql, tuple(params))
        return list(await cur.fetchall())

    async def _next_version(self, conn: Any, count: int) -> int:
        cur = await conn.execute(
            f"UPDATE {self.clock} SET version = version + %s WHERE id = 1 RETURNING version",
            (count,),
        )
        (version,) = await cur.fetchone()
        return int(version)

    async def _notify(self, conn: Any, version: int) -> None:
        if self.notify_channel is not None:
            await conn.execute("SELECT pg_notify(%s, %s)", (self.notify_channel, str(version)))

    async def create_schema(self) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            # Two processes running CREATE TABLE IF NOT EXISTS at once can both try to
            # create the table's type, and one fails (a unique violation in pg_type).
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.table,))
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} ("
                " server_id text PRIMARY KEY,"
                " status text NOT NULL,"
                " version bigint NOT NULL,"
                " changed_at timestamptz NOT NULL DEFAULT clock_timestamp(),"
                " next_at timestamptz,"
                " done_at timestamptz)"
            )
            await conn.execute(
                f"CREATE INDEX IF NOT EXISTS {self.table}_by_version ON {self.table} (version)"
            )
            await conn.execute(
                f"CREATE INDEX IF NOT EXISTS {self.table}_by_next_at ON {self.table} (next_at)"
            )
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.clock} ("
                " id int PRIMARY KEY, version bigint NOT NULL)"
            )
            await conn.execute(
                f"INSERT INTO {self.clock} VALUES (1, 0) ON CONFLICT (id) DO NOTHING"
            )


async def _open(
    connector: Any, table: str, size: int, configure: Callable[[Any], Awaitable[None]]
) -> Pool[Any]:
    """An open pool of the store's sessions, or the pool closed and an error (the pool's
    PoolTimeout says why the server refused)."""
    pool = Pool(
        connector,
        min_size=1,
        max_size=size,
        configure=configure,
        timeout=5,  # a request waits this long for a connection when the database is away
        name=f"polling:{table}",
    )
    try:
        await pool.open(timeout=10)
    except BaseException:
        await pool.close()
        raise
    return pool
