"""Sessions and a pooled database for MariaDB and PostgreSQL, one API for both.

    async with Database("mysql://root@127.0.0.1:3306/shop") as db:
        await db.execute("UPDATE seats SET user_id = %s WHERE id = %s", (7, 12))
        rows = await db.fetch("SELECT id FROM seats WHERE user_id IS NULL")
        async with db.transaction() as tx:                 # BEGIN ... COMMIT
            (seat,) = await tx.fetchone("SELECT id FROM seats ... FOR UPDATE SKIP LOCKED")
            await tx.execute("UPDATE seats SET user_id = %s WHERE id = %s", (7, seat))
        await db.run_transaction(book)                     # again on Deadlock, bounded

How a statement travels: a `Session` (one driver connection, autocommit on) runs it and
hands back rows, rowcount and lastrowid as a `Result`; any driver error comes out as one
of `sdlab.sql.errors`' named errors, the driver's own as its `__cause__`. A transaction
is explicit: `BEGIN` (with an isolation level if asked), the statements, `COMMIT`; if the
block raises, `ROLLBACK` is attempted but its own failure never hides the error that
caused it (a cancelled asyncmy query closes the connection, so its rollback would fail
too; the server rolls back a closed session by itself).

Sessions from `Database` come from `sdlab.pool` (fair, self-healing, never lends a
connection inside a transaction); `connect()` opens one session of its own, for code that
holds a session for a long time (a lock, a scripted interleaving). Every session of a
`Database` starts with the same settings: UTC, READ COMMITTED unless told otherwise.

A frozen server (SIGSTOP, a hung disk, a dead peer whose packets vanish) never answers,
and a pool's `timeout` bounds only the wait for a connection. So a `Database` (or
`connect()`) takes a `query_timeout`: a statement with no answer within it raises
`QueryTimeout`, and its connection is dropped at once, so the pool discards it instead of
lending it again (as HikariCP's socketTimeout does; unlike a server-side
statement_timeout, it works when the server cannot). The statement may still run, or
have committed, on the server.

SQLite is not driven from here (kv's store runs it on threads of its own); its dialect
and its errors are (`sdlab.sql.dialect`, `sdlab.sql.errors`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, Literal, NamedTuple, Self, TypeVar

from sdlab.failure import describe, socket_error
from sdlab.pool import MariaDB, Pool, PoolError, PostgreSQL
from sdlab.sql.dialect import Dialect, dialect_for
from sdlab.sql.errors import (
    DatabaseUnavailable,
    QueryTimeout,
    SQLError,
    TransactionRolledBack,
    UnknownDatabase,
    translate,
)
from sdlab.sql.urls import address_of, engine_of, redact

T = TypeVar("T")
Params = Sequence[Any]
Isolation = Literal["READ UNCOMMITTED", "READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"]
ISOLATION_LEVELS: tuple[Isolation, ...] = (
    "READ UNCOMMITTED",
    "READ COMMITTED",
    "REPEATABLE READ",
    "SERIALIZABLE",
)

logger = logging.getLogger("sdlab.sql")

_TITLES = {"mariadb": "MariaDB", "postgresql": "PostgreSQL"}


class Result(NamedTuple):
    rows: list[tuple[Any, ...]]
    rowcount: int
    lastrowid: int | None = None  # MariaDB: AUTO_INCREMENT or LAST_INSERT_ID(expr)
    columns: tuple[str, ...] = ()
    """The names of the result's columns, in order (empty if it returns no rows)."""

    def records(self) -> list[dict[str, Any]]:
        """The rows as dicts by column name, for statements whose columns are many or
        not known in advance (`SHOW SLAVE STATUS`, `SHOW STATUS`)."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


class Session:
    """One connection to the database, autocommit on unless inside `begin()`."""

    def __init__(self, conn: Any, dialect: Dialect, *, query_timeout: float | None = None) -> None:
        self.raw = conn
        """The driver's connection (asyncmy or psycopg), for what this API does not cover."""
        self.dialect = dialect
        self.query_timeout = query_timeout
        """Seconds a statement may wait for its answer (None: for ever); past it,
        QueryTimeout, and the connection is dropped."""
        self._mariadb = dialect.engine == "mariadb"
        self._cursor: Any = None

    async def run(self, sql: str, params: Params = ()) -> Result:
        """Run one statement: its rows (if it returns any), rowcount and lastrowid."""
        if self.query_timeout is None:
            return await self._run(sql, params)
        # Not asyncio.timeout around the driver call: cancelled, psycopg first sends the
        # server a cancel request and waits up to 5 s for it, which a frozen server never
        # answers. Drop the connection first; then the cancelled call ends at once.
        statement = asyncio.ensure_future(self._run(sql, params))
        try:
            done, _ = await asyncio.wait([statement], timeout=self.query_timeout)
        except BaseException:
            statement.cancel()
            raise
        if done:
            return statement.result()
        self.abort()  # the pool discards it (broken now); the server ends the session
        statement.cancel()
        await asyncio.wait([statement], timeout=1.0)
        if statement.done() and not statement.cancelled():
            statement.exception()  # retrieved: it failed because we closed its socket
        raise QueryTimeout(
            f"no answer within query_timeout ({self.query_timeout:g} s); the session was "
            "dropped, and the statement may still run, or have committed, on the server"
        )

    async def _run(self, sql: str, params: Params) -> Result:
        try:
            # One cursor for all the session's statements: psycopg's conn.execute() makes
            # a new one each time, about 10 us of CPU a statement (kv's hot path).
            if self._cursor is None:
                self._cursor = self.raw.cursor()
            cur = self._cursor
            # No parameters: no %-formatting, so a literal % in the SQL stays as it is.
            await cur.execute(sql, tuple(params) if params else None)
            if cur.description:
                rows = list(await cur.fetchall())
                columns = tuple(str(column[0]) for column in cur.description)
            else:
                rows, columns = [], ()
            return Result(rows, cur.rowcount, cur.lastrowid if self._mariadb else None, columns)
        except Exception as exc:
            named = translate(exc)
            if named is None:
                raise
            raise named from exc

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run a statement; the number of rows it changed (or matched, by engine)."""
        return (await self.run(sql, params)).rowcount

    async def fetch(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        return (await self.run(sql, params)).rows

    async def fetchone(self, sql: str, params: Params = ()) -> tuple[Any, ...] | None:
        rows = (await self.run(sql, params)).rows
        return rows[0] if rows else None

    async def fetchval(self, sql: str, params: Params = ()) -> Any:
        """The first column of the first row (None if no row)."""
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]

    async def server_id(self) -> int:
        """The server's id for this session (MariaDB's CONNECTION_ID(), PostgreSQL's
        backend pid): what lock-wait views, KILL and pg_terminate_backend call it."""
        if self._mariadb:
            return int(await self.fetchval("SELECT CONNECTION_ID()"))
        return int(self.raw.info.backend_pid)

    @property
    def in_transaction(self) -> bool:
        if self._mariadb:
            return bool(self.raw.get_transaction_status())
        return bool(self.raw.pgconn.transaction_status)  # 0: IDLE

    async def begin(self, isolation: Isolation | None = None) -> None:
        """Start a transaction (at `isolation`, else the session's level)."""
        if isolation is not None and isolation not in ISOLATION_LEVELS:
            raise ValueError(f"isolation must be one of {', '.join(ISOLATION_LEVELS)}")
        if self._mariadb:
            if isolation is not None:  # applies to the next transaction only
                await self.run(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
            await self.run("START TRANSACTION")
        else:
            level = f" ISOLATION LEVEL {isolation}" if isolation else ""
            await self.run(f"START TRANSACTION{level}")

    async def commit(self) -> None:
        """COMMIT; `TransactionRolledBack` if the server rolled back instead."""
        await self.run("COMMIT")
        if not self._mariadb and self._cursor.statusmessage == "ROLLBACK":
            raise TransactionRolledBack(
                "COMMIT rolled back: a statement of the transaction had failed, so "
                "PostgreSQL kept none of it"
            )

    async def rollback(self) -> None:
        await self.run("ROLLBACK")

    @asynccontextmanager
    async def transaction(self, isolation: Isolation | None = None) -> AsyncIterator[Self]:
        """BEGIN; the block; COMMIT. If the block raises: ROLLBACK, and its error goes on."""
        await self.begin(isolation)
        try:
            yield self
        except BaseException:
            with suppress(Exception):
                await self.rollback()
            raise
        await self.commit()

    @property
    def broken(self) -> bool:
        """True if the connection is known to be dead (closed, or its socket failed)."""
        if self._mariadb:
            return not self.raw.connected or bool(getattr(self.raw, "_stream_broken", False))
        return bool(self.raw.closed or self.raw.broken)

    def abort(self) -> None:
        """Drop the connection at once, without a goodbye: the server ends the session
        (and frees its locks) when it sees the socket close. For a session whose state is
        unknown, such as one whose statement was cancelled mid-wait."""
        with suppress(Exception):
            if self._mariadb:
                self.raw.close()
            else:
                self.raw.pgconn.finish()

    async def close(self) -> None:
        """Close the connection (a session from `connect()`; pooled ones go back instead)."""
        with suppress(Exception):
            if self._mariadb:
                await self.raw.ensure_closed()
            else:
                await self.raw.close()


class Database:
    """A pool of sessions to one database. Open it with `async with` or `await open()`.

    isolation: every session's default transaction isolation (None: the server's).
    query_timeout: seconds each statement may wait for its answer (None: for ever); past
        it, QueryTimeout, and the session's connection is discarded (see above).
    configure: `async def configure(session)`, run on every new session after the
        defaults (more session settings: a lock wait timeout, say).
    The rest are `sdlab.pool.Pool`'s (min_size, max_size, timeout, ...).
    """

    def __init__(
        self,
        url: str,
        *,
        isolation: Isolation | None = "READ COMMITTED",
        configure: Callable[[Session], Awaitable[object]] | None = None,
        name: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 30.0,
        query_timeout: float | None = None,
        **pool_options: Any,
    ) -> None:
        engine = engine_of(url)
        if engine == "sqlite":
            raise UnknownDatabase(
                f"{redact(url)!r}: sdlab.sql pools MariaDB and PostgreSQL only (SQLite has "
                "its dialect and errors here, and kv's store drives it)"
            )
        self.url = url
        self.dialect = dialect_for(engine)
        self.name = name or f"{_TITLES[engine]} {address_of(url)}"
        self.isolation = isolation
        if query_timeout is not None and query_timeout <= 0:
            raise ValueError(f"query_timeout must be positive, got {query_timeout}")
        self.query_timeout = query_timeout
        self.retries: Counter[str] = Counter()
        """Transactions `run_transaction` ran again, by the error's name."""
        self._configure = configure
        self._connector = _connector(url)
        self.pool: Pool[Any] = Pool(
            self._connector,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            configure=self._set_up,
            name=name or self.name,
            **pool_options,
        )

    def __repr__(self) -> str:
        return f"Database({self.name})"

    async def open(self, *, timeout: float = 10.0) -> Self:
        """Check the server answers (`DatabaseUnavailable` at once if not), then fill
        the pool."""
        probe = await _open_connection(self._connector, self.url, timeout=timeout)
        await Session(probe, self.dialect).close()
        try:
            await self.pool.open(timeout=timeout)
        except PoolError as exc:
            await self.pool.close()
            title, address = _TITLES[self.dialect.engine], address_of(self.url)
            raise DatabaseUnavailable(
                f"{self.name}: {exc}", service=title, address=address, reason=str(exc)
            ) from exc
        except BaseException:
            await self.pool.close()
            raise
        return self

    async def close(self) -> None:
        await self.pool.close()

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _set_up(self, conn: Any) -> None:
        session = Session(conn, self.dialect, query_timeout=self.query_timeout)
        await _defaults(session, self.isolation)
        if self._configure is not None:
            await self._configure(session)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[Session]:
        """A pooled session, autocommit on, for several statements in a row."""
        async with self.pool.connection() as conn:
            yield Session(conn, self.dialect, query_timeout=self.query_timeout)

    @asynccontextmanager
    async def transaction(self, isolation: Isolation | None = None) -> AsyncIterator[Session]:
        """A pooled session inside BEGIN ... COMMIT (ROLLBACK if the block raises)."""
        async with (
            self.pool.connection() as conn,
            Session(conn, self.dialect, query_timeout=self.query_timeout).transaction(
                isolation
            ) as tx,
        ):
            yield tx

    async def run_transaction(
        self,
        work: Callable[[Session], Awaitable[T]],
        *,
        isolation: Isolation | None = None,
        attempts: int = 5,
        backoff: float = 0.005,
    ) -> T:
        """`await work(tx)` in a transaction; run again (a new transaction) when the
        server rolled it back to break a deadlock or a serialization conflict, at most
        `attempts` times in all, with jittered backoff. Counted in `retries`."""
        for attempt in range(1, attempts + 1):
            try:
                async with self.transaction(isolation) as tx:
                    return await work(tx)
            except SQLError as exc:
                if not exc.retryable or attempt == attempts:
                    raise
                self.retries[type(exc).__name__] += 1
                logger.debug("%s: %s, attempt %d runs again", self.name, exc, attempt)
            await asyncio.sleep(random.uniform(0, backoff * 2**attempt))
        raise AssertionError("unreachable")

    async def run(self, sql: str, params: Params = ()) -> Result:
        async with self.session() as s:
            return await s.run(sql, params)

    async def execute(self, sql: str, params: Params = ()) -> int:
        async with self.session() as s:
            return await s.execute(sql, params)

    async def fetch(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        async with self.session() as s:
            return await s.fetch(sql, params)

    async def fetchone(self, sql: str, params: Params = ()) -> tuple[Any, ...] | None:
        async with self.session() as s:
            return await s.fetchone(sql, params)

    async def fetchval(self, sql: str, params: Params = ()) -> Any:
        async with self.session() as s:
            return await s.fetchval(sql, params)


async def connect(
    url: str,
    *,
    isolation: Isolation | None = "READ COMMITTED",
    timeout: float = 10.0,
    query_timeout: float | None = None,
) -> Session:
    """One session of its own (not pooled), with a `Database`'s defaults. Close it."""
    dialect = dialect_for(url)
    if dialect.engine == "sqlite":
        raise UnknownDatabase(f"{redact(url)!r}: connect() opens MariaDB or PostgreSQL sessions")
    conn = await _open_connection(_connector(url), url, timeout=timeout)
    session = Session(conn, dialect, query_timeout=query_timeout)
    try:
        await _defaults(session, isolation)
    except BaseException:
        await session.close()
        raise
    return session


def _connector(url: str) -> MariaDB | PostgreSQL:
    if engine_of(url) == "mariadb":
        return MariaDB(url, autocommit=True)
    return PostgreSQL(url, autocommit=True)


async def _open_connection(connector: MariaDB | PostgreSQL, url: str, *, timeout: float) -> Any:
    try:
        async with asyncio.timeout(timeout):
            return await connector.connect()
    except Exception as exc:
        named = translate(exc, connecting=True)
        title, address = _TITLES[engine_of(url)], address_of(url)
        reason = _connect_reason(exc, named)
        raise DatabaseUnavailable(
            f"{title} at {address}: {reason}",
            code=getattr(named, "code", None),
            service=title,
            address=address,
            reason=reason,
        ) from exc


def _connect_reason(exc: BaseException, named: SQLError | None) -> str:
    """Why a session could not be opened, in one line: the socket's own error where the
    driver wrapped one (asyncmy's 2003 around ConnectionRefusedError), libpq's last
    words otherwise ("connection to server at ... failed: Connection refused")."""
    found = socket_error(exc)
    if found is not None:
        return describe(found)
    first = (str(exc).strip().splitlines() or [""])[0]
    if "Connection refused" in first:
        return describe(ConnectionRefusedError())
    if "timeout expired" in first:
        return describe(TimeoutError())
    return str(named) if named is not None else describe(exc)


async def _defaults(session: Session, isolation: Isolation | None) -> None:
    """UTC, the isolation level; on MariaDB no 'already exists' notes (asyncmy prints
    every note to stderr)."""
    if isolation is not None and isolation not in ISOLATION_LEVELS:
        raise ValueError(f"isolation must be one of {', '.join(ISOLATION_LEVELS)}")
    if session.dialect.engine == "mariadb":
        await session.run("SET SESSION time_zone = '+00:00', sql_notes = 0")
        if isolation is not None:
            await session.run(f"SET SESSION TRANSACTION ISOLATION LEVEL {isolation}")
    else:
        await session.run("SET TIME ZONE 'UTC'")
        if isolation is not None:
            await session.run(f"SET default_transaction_isolation = '{isolation.lower()}'")
