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

SQLite runs on threads of our own rather than through aiosqlite: aiosqlite hops to its
thread and back for every statement, while a whole batch here is one hop (the script
runs on the writer thread, statement after statement, then commits). One writer thread
owns the only write connection, as SQLite allows one writer at a time anyway; one
reader thread reads alongside it (WAL mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from asyncmy.errors import OperationalError as MariaDBOperationalError

from sdlab.kv.core import KVError
from sdlab.kv.ops import Script
from sdlab.kv.sql import Dialect, MariaDBDialect, PostgresDialect, Result, SQLiteDialect, Stmt
from sdlab.pool import MariaDB, Pool, PostgreSQL

T = TypeVar("T")

DEFAULT_MYSQL_DATABASE = "sdlab_kv"
DEADLOCK_ATTEMPTS = 10

logger = logging.getLogger("sdlab.kv")


class UnknownBackend(KVError, ValueError):
    """A backend URL whose scheme is not sqlite, mysql/mariadb or postgresql."""


class Backend(ABC):
    """One table in one database."""

    dialect: Dialect
    name: str
    deadlocks = 0  # transactions run again after the database chose them as a victim

    @abstractmethod
    async def open(self) -> None:
        """Connect, and create the table if it is not there."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def read(self, script: Script[T]) -> T:
        """Run a script outside any transaction (each statement sees committed data)."""

    @abstractmethod
    async def transaction(self, script: Script[T]) -> T:
        """Run a script in one transaction; return after COMMIT (roll back if it raises)."""

    def is_deadlock(self, exc: Exception) -> bool:
        """Did the database roll the whole transaction back to break a deadlock?"""
        return False

    async def write(self, build: Callable[[], Script[T]]) -> T:
        """Run `build()` in one transaction; return after COMMIT.

        Transactions that lock rows in different orders (two servers' batches, a batch
        and the sweeper) deadlock now and then, and the database rolls one of them back.
        Nothing of it was written, so it runs again (a new script: new "now"), up to
        DEADLOCK_ATTEMPTS times, and the callers never hear of it. Any other failure is
        raised: after a lost connection, say, nobody knows whether COMMIT happened."""
        attempt = 1
        while True:
            try:
                return await self.transaction(build())
            except Exception as exc:
                if attempt >= DEADLOCK_ATTEMPTS or not self.is_deadlock(exc):
                    raise
                logger.info("%s: deadlock, attempt %d runs again: %s", self.name, attempt, exc)
            self.deadlocks += 1
            attempt += 1
            await asyncio.sleep(random.uniform(0, 0.002 * attempt))  # let the winner finish


def backend_for(url: str, *, pool_size: int = 10, timeout: float = 30.0) -> Backend:
    """The backend a URL names (see the module's docstring)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    table = next((value for name, value in reversed(query) if name == "table"), "kv_store")
    rest = [(name, value) for name, value in query if name != "table"]
    scheme = parts.scheme.split("+")[0]
    if scheme in ("postgresql", "postgres"):  # libpq reads the rest: sslmode=, ...
        url = urlunsplit(parts._replace(query=urlencode(rest)))
        return PostgresBackend(url, table=table, pool_size=pool_size, timeout=timeout)
    if rest and scheme in ("sqlite", "mysql", "mariadb"):  # ignored, they would mislead
        names = ", ".join(sorted({name for name, _ in rest}))
        raise UnknownBackend(f"backend {url!r}: only table= is understood here, not {names}")
    if scheme == "sqlite":
        path = url.split("://", 1)[1].split("?", 1)[0]
        path = path[1:] if path.startswith("/") else path
        return SQLiteBackend(None if path in ("", ":memory:") else Path(path), table=table)
    if scheme in ("mysql", "mariadb"):
        url = urlunsplit(parts._replace(query=""))
        return MariaDBBackend(url, table=table, pool_size=pool_size, timeout=timeout)
    raise UnknownBackend(
        f"backend {url!r}: use sqlite:///FILE, mysql://USER@HOST:PORT/DB or "
        "postgresql://USER@HOST:PORT/DB"
    )


async def drive(script: Script[T], execute: Callable[[Stmt], Awaitable[Result]]) -> T:
    """Feed a script the results of its statements until it returns."""
    try:
        statement = next(script)
        while True:
            statement = script.send(await execute(statement))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def drive_sync(script: Script[T], execute: Callable[[Stmt], Result]) -> T:
    try:
        statement = next(script)
        while True:
            statement = script.send(execute(statement))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


class SQLiteBackend(Backend):
    """A file (WAL, synchronous=FULL: a commit is on disk when it returns), or memory."""

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

        def create(conn: sqlite3.Connection) -> None:
            for ddl in self.dialect.create():
                conn.execute(ddl)

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
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    @staticmethod
    def _execute(conn: sqlite3.Connection) -> Callable[[Stmt], Result]:
        def execute(statement: Stmt) -> Result:
            cursor = conn.execute(statement.sql, statement.params)
            return Result(cursor.fetchall(), cursor.rowcount)

        return execute

    def _transaction(self, script: Script[T]) -> T:
        conn = self._write_conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = drive_sync(script, self._execute(conn))
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
        return await self._in(self._reader, drive_sync, script, self._execute(self._read_conn))

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


class MariaDBBackend(Backend):
    """asyncmy connections from `sdlab.pool`, in READ COMMITTED: a locking read locks the
    rows it finds and no gaps, so writers on different keys never wait for each other."""

    def __init__(
        self, url: str, *, table: str = "kv_store", pool_size: int = 10, timeout: float = 30.0
    ) -> None:
        parts = urlsplit(url)
        self.database = parts.path.strip("/") or DEFAULT_MYSQL_DATABASE
        self.url = urlunsplit(parts._replace(path=f"/{self.database}"))
        self.server_url = urlunsplit(parts._replace(path="/"))
        self.dialect = MariaDBDialect(table)
        self.name = f"MariaDB {parts.hostname}:{parts.port or 3306}/{self.database}"
        self.pool_size = pool_size
        self.timeout = timeout
        self.pool: Pool[Any] | None = None

    async def open(self) -> None:
        admin = await MariaDB(self.server_url, autocommit=True).connect()
        try:
            async with admin.cursor() as cur:
                await cur.execute("SET SESSION sql_notes = 0")  # no "already exists" warnings
                await cur.execute(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
                await cur.execute(f"USE `{self.database}`")
                for ddl in self.dialect.create():
                    await cur.execute(ddl)
        finally:
            await admin.ensure_closed()
        self.pool = Pool(
            MariaDB(self.url, autocommit=True),
            min_size=1,
            max_size=self.pool_size,
            timeout=self.timeout,
            configure=self._configure,
            name="kv",
        )
        await self.pool.open()

    @staticmethod
    async def _configure(conn: Any) -> None:
        async with conn.cursor() as cur:
            await cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")

    @staticmethod
    def _execute(cur: Any) -> Callable[[Stmt], Awaitable[Result]]:
        async def execute(statement: Stmt) -> Result:
            await cur.execute(statement.sql, statement.params)
            rows = list(await cur.fetchall()) if cur.description else []
            return Result(rows, cur.rowcount)

        return execute

    async def read(self, script: Script[T]) -> T:
        assert self.pool is not None
        async with self.pool.connection() as conn, conn.cursor() as cur:
            return await drive(script, self._execute(cur))

    def is_deadlock(self, exc: Exception) -> bool:
        # 1213, ER_LOCK_DEADLOCK: InnoDB rolled the whole transaction back.
        return isinstance(exc, MariaDBOperationalError) and exc.args[:1] == (1213,)

    async def transaction(self, script: Script[T]) -> T:
        assert self.pool is not None
        async with self.pool.connection() as conn:
            await conn.begin()
            try:
                async with conn.cursor() as cur:
                    result = await drive(script, self._execute(cur))
                await conn.commit()
            except BaseException:
                with contextlib.suppress(Exception):
                    await conn.rollback()  # else the pool sees the open transaction
                raise
            return result

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()


class PostgresBackend(Backend):
    """psycopg 3 connections from `sdlab.pool` (READ COMMITTED, PostgreSQL's default)."""

    def __init__(
        self, url: str, *, table: str = "kv_store", pool_size: int = 10, timeout: float = 30.0
    ) -> None:
        self.url = url
        self.dialect = PostgresDialect(table)
        parts = urlsplit(url)
        self.name = f"PostgreSQL {parts.hostname}:{parts.port or 5432}{parts.path}"
        self.pool_size = pool_size
        self.timeout = timeout
        self.pool: Pool[Any] | None = None

    async def open(self) -> None:
        self.pool = Pool(
            PostgreSQL(self.url, autocommit=True),
            min_size=1,
            max_size=self.pool_size,
            timeout=self.timeout,
            name="kv",
        )
        await self.pool.open()
        # Two servers starting at once would race on CREATE ... IF NOT EXISTS.
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ["sdlab.kv"])
            for ddl in self.dialect.create():
                await conn.execute(ddl)

    @staticmethod
    def _execute(cur: Any) -> Callable[[Stmt], Awaitable[Result]]:
        async def execute(statement: Stmt) -> Result:
            await cur.execute(statement.sql, statement.params)
            rows = await cur.fetchall() if cur.description else []
            return Result(rows, cur.rowcount)

        return execute

    async def read(self, script: Script[T]) -> T:
        assert self.pool is not None
        async with self.pool.connection() as conn:
            return await drive(script, self._execute(conn.cursor()))

    def is_deadlock(self, exc: Exception) -> bool:
        return isinstance(exc, psycopg.errors.DeadlockDetected)  # 40P01: rolled back

    async def transaction(self, script: Script[T]) -> T:
        assert self.pool is not None
        async with self.pool.connection() as conn, conn.transaction():
            return await drive(script, self._execute(conn.cursor()))

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
