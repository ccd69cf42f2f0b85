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

The SQL goes through `sdlab.sql` (a pooled `Database`, its named errors); the little that
differs between MariaDB and PostgreSQL is a few strings per engine in `_ENGINES`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sdlab import sql
from sdlab.failure import describe
from sdlab.polling.model import (
    AlreadyCreated,
    CreationInProgress,
    Delays,
    Server,
    Status,
    UnknownServer,
)
from sdlab.pool import PoolError

DEFAULT_TABLE = "ec2_servers"
DEFAULT_MYSQL_DATABASE = "sdlab_polling"

# The statuses each request may change a server from.
_CREATE_FROM = (Status.NOT_YET_CREATED,)
_TERMINATE_FROM = (Status.DONE,)

DATABASE_ERRORS: tuple[type[Exception], ...] = (
    PoolError,  # no session within the pool's timeout; its PoolTimeout says why
    sql.ConnectionLost,
    sql.DatabaseUnavailable,
    sql.LockWaitTimeout,
    sql.QueryTimeout,
    sql.Deadlock,
    sql.SerializationFailure,
)
"""What a store's call raises when the database is away or too busy (HTTP 503)."""


@dataclass(frozen=True)
class _Engine:
    """The store's SQL that differs between MariaDB and PostgreSQL. `{t}` is the table,
    `{c}` the clock, `{v}` and `{n}` the table's indexes (PostgreSQL names them per schema)."""

    later: str  # the time %s seconds from now
    until_due: str  # seconds from now to the earliest scheduled transition
    take: str  # advance the clock by %s; the last version comes back (see `_take`)
    schema: tuple[str, ...]

    def naming(self, **names: str) -> _Engine:
        """The same SQL with one table's names written in."""
        return _Engine(
            self.later,
            self.until_due.format(**names),
            self.take.format(**names),
            tuple(statement.format(**names) for statement in self.schema),
        )


_ENGINES = {
    "mariadb": _Engine(
        later="NOW(6) + INTERVAL ROUND(%s * 1000000) MICROSECOND",
        until_due="SELECT TIMESTAMPDIFF(MICROSECOND, NOW(6), MIN(next_at)) / 1e6 FROM {t}",
        # LAST_INSERT_ID(expr) hands the new value back in the OK packet: no SELECT.
        take="UPDATE {c} SET version = LAST_INSERT_ID(version + %s) WHERE id = 1",
        schema=(
            "CREATE TABLE IF NOT EXISTS {t} ("
            " server_id VARCHAR(64) NOT NULL PRIMARY KEY,"
            " status VARCHAR(16) NOT NULL,"
            " version BIGINT NOT NULL,"
            " changed_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),"
            " next_at TIMESTAMP(6) NULL DEFAULT NULL,"
            " done_at TIMESTAMP(6) NULL DEFAULT NULL,"
            " KEY by_version (version), KEY by_next_at (next_at)"
            ") ENGINE=InnoDB",
            "CREATE TABLE IF NOT EXISTS {c} ("
            " id TINYINT NOT NULL PRIMARY KEY, version BIGINT NOT NULL) ENGINE=InnoDB",
        ),
    ),
    "postgresql": _Engine(
        later="clock_timestamp() + make_interval(secs => %s)",
        until_due="SELECT EXTRACT(EPOCH FROM MIN(next_at) - clock_timestamp()) FROM {t}",
        take="UPDATE {c} SET version = version + %s WHERE id = 1 RETURNING version",
        schema=(
            "CREATE TABLE IF NOT EXISTS {t} ("
            " server_id text PRIMARY KEY,"
            " status text NOT NULL,"
            " version bigint NOT NULL,"
            " changed_at timestamptz NOT NULL DEFAULT clock_timestamp(),"
            " next_at timestamptz,"
            " done_at timestamptz)",
            "CREATE INDEX IF NOT EXISTS {v} ON {t} (version)",
            "CREATE INDEX IF NOT EXISTS {n} ON {t} (next_at)",
            "CREATE TABLE IF NOT EXISTS {c} (id int PRIMARY KEY, version bigint NOT NULL)",
        ),
    ),
}


class Store:
    """The servers table of one database. Make one with `Store.connect(url)`."""

    def __init__(self, db: sql.Database, table: str = DEFAULT_TABLE) -> None:
        self.db = db
        self.dialect = db.dialect
        self.table = _checked(table)
        self.clock = f"{table}_clock"
        self.database = sql.database_of(db.url)
        self.notify_channel: str | None = None
        """If set (PostgreSQL), every change sends NOTIFY on this channel inside its
        transaction: the notification goes out if and only if the change commits."""
        quote = db.dialect.quote
        self._t, self._c = quote(table), quote(self.clock)
        self._engine = _ENGINES[db.dialect.engine].naming(
            t=self._t, c=self._c, v=quote(f"{table}_by_version"), n=quote(f"{table}_by_next_at")
        )

    @staticmethod
    async def connect(url: str, table: str = DEFAULT_TABLE, *, pool_size: int = 4) -> Store:
        """Open a store on a `mysql://` (MariaDB, MySQL) or `postgresql://` URL and create
        its tables if missing. A MariaDB URL without a database uses `sdlab_polling`,
        created if needed. A server that is away: `DatabaseUnavailable`, at once."""
        _checked(table)
        engine = _engine_of(url)
        try:
            if engine == "mariadb" and not sql.database_of(url):
                url = await sql.ensure_database(url, default=DEFAULT_MYSQL_DATABASE)
            db = sql.Database(url, max_size=pool_size, timeout=5, name=f"polling:{table}")
            await db.open(timeout=10)
        except sql.DatabaseUnavailable as exc:
            # The layer's reason, in the one line polling has always printed.
            reason = " ".join(describe(exc.__cause__ or exc).split())
            where = sql.address_of(url)
            raise sql.DatabaseUnavailable(f"{engine} at {where}: {reason}", code=exc.code) from exc
        store = Store(db, table)
        try:
            await store.create_schema()
        except BaseException:
            await store.close()
            raise
        return store

    async def create_schema(self) -> None:
        """Create both tables and the clock row, if missing."""
        await sql.ensure_schema(self.db, self._engine.schema, lock=self.table)
        clock_row = self.dialect.insert_ignore(self.clock, ["id", "version"], key=["id"])
        await self.db.execute(clock_row, (1, 0))

    async def close(self) -> None:
        await self.db.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- reading ----------------------------------------------------------------------

    async def get(self, server_id: str) -> Server | None:
        rows = await self._select(self.db, "WHERE server_id = %s", (server_id,))
        return rows[0] if rows else None

    async def all(self) -> list[Server]:
        return await self._select(self.db, "ORDER BY server_id", ())

    async def newest(self) -> int:
        """The table's newest version: the last one the clock handed out (0 if none)."""
        version = await self.db.fetchval(f"SELECT version FROM {self._c} WHERE id = 1")
        return int(version or 0)

    async def changes_since(self, version: int, *, limit: int | None = None) -> list[Server]:
        """Servers whose last change is newer than `version`, oldest change first."""
        tail = f" LIMIT {int(limit)}" if limit else ""
        return await self._select(self.db, f"WHERE version > %s ORDER BY version{tail}", (version,))

    # -- changing ---------------------------------------------------------------------

    async def add(self, server_ids: Sequence[str]) -> list[Server]:
        """Add the servers that do not exist yet, NOT_YET_CREATED; return those added.
        Safe to call from several processes at once (the clock lock serialises them)."""
        if not server_ids:
            return []
        wanted = list(dict.fromkeys(server_ids))
        async with self.db.transaction() as tx:
            await tx.execute(f"SELECT version FROM {self._c} WHERE id = 1 FOR UPDATE")
            present = {
                row[0]
                for row in await tx.fetch(
                    f"SELECT server_id FROM {self._t} WHERE server_id IN "
                    f"({self.dialect.marks(len(wanted))})",
                    wanted,
                )
            }
            missing = [s for s in wanted if s not in present]
            if not missing:
                return []
            last = await self._take(tx, len(missing))
            for offset, server_id in enumerate(missing):
                await tx.execute(
                    f"INSERT INTO {self._t} (server_id, status, version, changed_at) "
                    f"VALUES (%s, %s, %s, {self.dialect.now})",
                    (server_id, Status.NOT_YET_CREATED.value, last - len(missing) + 1 + offset),
                )
            marks = self.dialect.marks(len(missing))
            added = await self._select(tx, f"WHERE server_id IN ({marks})", missing)
            await self._notify(tx, last)
        return sorted(added, key=lambda s: s.version)

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
        due = await self.db.fetch(
            f"SELECT server_id, status FROM {self._t} "
            f"WHERE next_at <= {self.dialect.now} ORDER BY next_at LIMIT 1000"
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
        value = await self.db.fetchval(self._engine.until_due)
        return None if value is None else float(value)

    async def drop(self) -> None:
        """Drop both tables (tests and experiments clean up with it)."""
        await self.db.execute(f"DROP TABLE IF EXISTS {self._t}, {self._c}")

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
        now = self.dialect.now
        if schedule is not None:  # a new creation: write its whole schedule
            later = self._engine.later
            timing: tuple[str, tuple[float, ...]] = (
                f"next_at = {later}, done_at = {later}",
                schedule,
            )
        elif to is Status.IN_PROGRESS:  # the rest of the schedule is already in the row
            timing = ("next_at = done_at", ())
        else:
            timing = ("next_at = NULL, done_at = NULL", ())
        guard = f" AND next_at <= {now}" if due_only else ""
        async with self.db.transaction() as tx:
            updated = await tx.execute(
                f"UPDATE {self._t} SET status = %s, changed_at = {now}, {timing[0]} "
                f"WHERE server_id = %s AND status IN ({self.dialect.marks(len(allowed))}){guard}",
                (to.value, *timing[1], server_id, *(s.value for s in allowed)),
            )
            if updated == 0:
                return None
            version = await self._take(tx, 1)
            await tx.execute(
                f"UPDATE {self._t} SET version = %s WHERE server_id = %s", (version, server_id)
            )
            (server,) = await self._select(tx, "WHERE server_id = %s", (server_id,))
            await self._notify(tx, version)
        return server

    async def _take(self, tx: sql.Session, count: int) -> int:
        """Advance the clock by `count` (inside `tx`, which keeps the clock row locked
        until it ends); return the last version taken. PostgreSQL hands it back as a row
        (RETURNING), MariaDB as the statement's LAST_INSERT_ID."""
        done = await tx.run(self._engine.take, (count,))
        (version,) = done.rows[0] if done.rows else (done.lastrowid,)
        return int(version)

    async def _notify(self, tx: sql.Session, version: int) -> None:
        """Announce the change inside its transaction, if this store does that."""
        if self.notify_channel is not None:
            await tx.execute("SELECT pg_notify(%s, %s)", (self.notify_channel, str(version)))

    async def _select(
        self, db: sql.Database | sql.Session, where: str, params: Sequence[Any]
    ) -> list[Server]:
        rows = await db.fetch(
            f"SELECT server_id, status, version, changed_at FROM {self._t} {where}", params
        )
        return [Server.from_row(*row) for row in rows]


def _checked(table: str) -> str:
    """`table` if it and the names made from it (`<table>_by_next_at` the longest) pass
    the one naming rule, `sdlab.sql.identifier`."""
    try:
        sql.identifier(table)
        sql.identifier(f"{table}_by_next_at")
    except sql.InvalidIdentifier as exc:
        raise sql.InvalidIdentifier(
            f"table name {table!r} must match the SQL naming rule: {exc}"
        ) from None
    return table


def _engine_of(url: str) -> str:
    """The engine of a MariaDB or PostgreSQL URL; any other is refused in one sentence."""
    with contextlib.suppress(sql.UnknownDatabase):
        engine = sql.engine_of(url)
        if engine in _ENGINES:
            return engine
    raise sql.UnknownDatabase(
        f"database URL {sql.redact(url)!r}: scheme should be mysql:// (MariaDB, MySQL) "
        "or postgresql://"
    )
