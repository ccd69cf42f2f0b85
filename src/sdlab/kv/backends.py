"""Where the table lives: SQLite, MariaDB or PostgreSQL, chosen by URL.

    sqlite:///kv.sqlite3        a file (relative path; sqlite:////tmp/kv.db is absolute)
    sqlite://                   in memory, gone at exit
    mysql://root@127.0.0.1:3306/sdlab_kv     MariaDB (the database is created if missing;
                                             default sdlab_kv)
    postgresql://postgres@127.0.0.1:5432/postgres
    ...?table=name              another table than kv_store (PostgreSQL URLs keep
                                their other parameters, sslmode= say, for libpq)

A backend runs the scripts of `ops.py`: `read()` one at a time outside a transaction,
`write()` inside one transaction that commits before it returns (run again if the
database broke a deadlock by rolling it back).

MariaDB and PostgreSQL are one backend on the shared SQL layer (`sdlab.sql.Database`):
its pool, its transactions, its named errors. SQLite runs on threads of our own rather
than through aiosqlite: aiosqlite hops to its thread and back for every statement, while
a whole batch here is one hop (the script runs on the writer thread, statement after
statement, then commits). One writer thread owns the only write connection, as SQLite
allows one writer at a time anyway; one reader thread reads alongside it (WAL mode).
"""

from __future__ import annotations

import asyncio
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sdlab.kv.core import KVError
from sdlab.kv.ops import Script
from sdlab.kv.sql import DIALECTS, Dialect, Result, SQLiteDialect
from sdlab.pool import Pool
from sdlab.sql import (
    Database,
    UnknownDatabase,
    database_of,
    engine_of,
    ensure_database,
    ensure_schema,
    translate,
    with_database,
)

T = TypeVar("T")
Run = Callable[[str, Sequence[Any]], Awaitable[Result]]

DEFAULT_MYSQL_DATABASE = "sdlab_kv"
DEADLOCK_ATTEMPTS = 10


class UnknownBackend(KVError, ValueError):
    """A backend URL whose scheme is not sqlite, mysql/mariadb or postgresql."""


class Backend(ABC):
    """One table in one database."""

    dialect: Dialect
    name: str

    @abstractmethod
    async def open(self) -> None:
        """Connect, and create the table if it is not there."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def create(self, dialect: Dialect) -> None:
        """Create another table (a Redis database's: see `Store.dialect`) if missing."""

    @abstractmethod
    async def read(self, script: Script[T]) -> T:
        """Run a script outside any transaction (each statement sees committed data)."""

    @abstractmethod
    async def transaction(self, script: Script[T]) -> T:
        """Run a script in one transaction; return after COMMIT (roll back if it raises)."""

    async def write(self, build: Callable[[], Script[T]]) -> T:
        """Run `build()` in one transaction; return after COMMIT.

        Transactions that lock rows in different orders (two servers' batches, a batch
        and the sweeper) deadlock now and then, and the database rolls one of them back.
        Nothing of it was written, so a backend where that happens runs it again (a new
        script: new "now"), up to DEADLOCK_ATTEMPTS times, and the callers never hear of
        it. Any other failure is raised: after a lost connection, say, nobody knows
        whether COMMIT happened."""
        return await self.transaction(build())

    @property
    def deadlocks(self) -> int:
        """Transactions run again after the database chose them as a deadlock's victim."""
        return 0


def backend_for(url: str, *, pool_size: int = 10, timeout: float = 30.0) -> Backend:
    """The backend a URL names (see the module's docstring)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    table = next((value for name, value in reversed(query) if name == "table"), "kv_store")
    rest = [(name, value) for name, value in query if name != "table"]
    try:
        engine = engine_of(url)
    except UnknownDatabase:
        raise UnknownBackend(
            f"backend {url!r}: use sqlite:///FILE, mysql://USER@HOST:PORT/DB or "
            "postgresql://USER@HOST:PORT/DB"
        ) from None
    if rest and engine != "postgresql":  # libpq reads them there; elsewhere they mislead
        names = ", ".join(sorted({name for name, _ in rest}))
        raise UnknownBackend(f"backend {url!r}: only table= is understood here, not {names}")
    if engine == "sqlite":  # (not through urlunsplit: it would read sqlite:////abs as a host)
        path = database_of(url)
        return SQLiteBackend(None if path in ("", ":memory:") else Path(path), table=table)
    url = urlunsplit(parts._replace(query=urlencode(rest)))
    return SQLBackend(url, table=table, pool_size=pool_size, timeout=timeout)


async def drive(script: Script[T], run: Run) -> T:
    """Feed a script the results of its statements until it returns."""
    try:
        statement = next(script)
        while True:
            statement = script.send(await run(*statement))
    except StopIteration as done:
        return done.value


def drive_sync(script: Script[T], run: Callable[[str, Sequence[Any]], Result]) -> T:
    try:
        statement = next(script)
        while True:
            statement = script.send(run(*statement))
    except StopIteration as done:
        return done.value


class SQLBackend(Backend):
    """MariaDB or PostgreSQL, on a pooled `sdlab.sql.Database` in READ COMMITTED: on
    MariaDB a locking read then locks the rows it finds and no gaps, so writers on
    different keys never wait for each other (PostgreSQL's default level anyway)."""

    def __init__(
        self, url: str, *, table: str = "kv_store", pool_size: int = 10, timeout: float = 30.0
    ) -> None:
        engine = engine_of(url)
        if engine == "mariadb":  # the table needs a database to be in
            url = with_database(url, database_of(url) or DEFAULT_MYSQL_DATABASE)
        self.url = url
        self.dialect = DIALECTS[engine](table)
        self.db = Database(url, isolation="READ COMMITTED", max_size=pool_size, timeout=timeout)
        self.name = f"{self.db.name}/{database_of(url)}"

    @property
    def pool(self) -> Pool[Any]:
        """The connections (`sdlab.pool.Pool`: its stats, say)."""
        return self.db.pool

    @property
    def deadlocks(self) -> int:
        return sum(self.db.retries.values())

    async def open(self) -> None:
        # A PostgreSQL database is not created: that needs a session in the maintenance
        # database, which a user of their own database may not be allowed.
        if self.dialect.sql.engine == "mariadb":
            await ensure_database(self.url)
        await self.db.open()
        try:
            await ensure_schema(self.db, self.dialect.create(), lock="sdlab.kv")
        except BaseException:
            await self.db.close()
            raise

    async def close(self) -> None:
        await self.db.close()

    async def create(self, dialect: Dialect) -> None:
        await ensure_schema(self.db, dialect.create(), lock="sdlab.kv")

    async def read(self, script: Script[T]) -> T:
        async with self.db.session() as session:
            return await drive(script, session.run)

    async def transaction(self, script: Script[T]) -> T:
        async with self.db.transaction() as tx:
            return await drive(script, tx.run)

    async def write(self, build: Callable[[], Script[T]]) -> T:
        # Backoff 1 ms doubling: the first rerun waits up to 2 ms, for the winner to finish.
        return await self.db.run_transaction(
            lambda tx: drive(build(), tx.run), attempts=DEADLOCK_ATTEMPTS, backoff=0.001
        )


MariaDBBackend = PostgresBackend = SQLBackend  # their names before they were one backend


class SQLiteBackend(Backend):
    """A file (WAL, synchronous=FULL: a commit is on disk when it returns), or memory.
    sqlite3's errors come out as `sdlab.sql`'s named ones, as on the other backends."""

    def __init__(self, path: Path | None, *, table: str = "kv_store") -> None:
        self.path = path
        self.dialect = SQLiteDialect(table)
        self.name = f"SQLite {path or ':memory:'}"
        self._writer: ThreadPoolExecutor | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._connections: list[sqlite3.Connection] = []
        self._write_conn: sqlite3.Connection | None = None
        self._read_conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="kv-sqlite-writer")
        self._write_conn = await self._in(self._writer, self._connect)
        if self.path is None:  # one connection for both: a second one would be another db
            self._reader, self._read_conn = self._writer, self._write_conn
        else:
            self._reader = ThreadPoolExecutor(1, thread_name_prefix="kv-sqlite-reader")
            self._read_conn = await self._in(self._reader, self._connect)

        await self.create(self.dialect)

    async def create(self, dialect: Dialect) -> None:
        def create(conn: sqlite3.Connection) -> None:
            for ddl in dialect.create():
                conn.execute(ddl)

        assert self._writer is not None
        await self._in(self._writer, create, self._write_conn)

    def _connect(self) -> sqlite3.Connection:
        target = ":memory:" if self.path is None else str(self.path)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 10000")
        if self.path is not None:
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        self._connections.append(conn)
        return conn

    async def _in(self, executor: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
        except sqlite3.Error as exc:
            named = translate(exc)
            if named is None:
                raise
            raise named from exc

    @staticmethod
    def _runner(conn: sqlite3.Connection) -> Callable[[str, Sequence[Any]], Result]:
        def run(sql: str, params: Sequence[Any]) -> Result:
            cursor = conn.execute(sql, params)
            return Result(cursor.fetchall(), cursor.rowcount)

        return run

    def _transaction(self, script: Script[T]) -> T:
        conn = self._write_conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = drive_sync(script, self._runner(conn))
            conn.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back by itself (a full disk): then a ROLLBACK would
            # fail, and its error hide the one that matters.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    async def read(self, script: Script[T]) -> T:
        assert self._reader is not None
        assert self._read_conn is not None
        return await self._in(self._reader, drive_sync, script, self._runner(self._read_conn))

    async def transaction(self, script: Script[T]) -> T:
        assert self._writer is not None
        return await self._in(self._writer, self._transaction, script)

    async def close(self) -> None:
        for executor in {self._writer, self._reader} - {None}:
            assert executor is not None
            executor.shutdown(wait=True)
        for conn in self._connections:
            conn.close()
        self._connections.clear()
