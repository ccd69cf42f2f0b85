"""The SQL of each database: one table, its statements, and the native upsert.

    kv_store (k      binary key, primary key (rows are clustered by key),
              v      binary value,
              expires_at  ms since the epoch; NULL: never; past (or -1): gone)
    + an index on expires_at, for the sweeper

Every statement is a `Stmt` (text and parameters) that the backends run; the scripts in
`ops.py` decide which to run, so the rules live once for all three databases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from sdlab.kv.core import KVError


class InvalidTable(KVError, ValueError):
    """A table name that is not letters, digits and `_` (it is written into the SQL)."""


class Stmt(NamedTuple):
    sql: str
    params: Sequence[Any] = ()


class Result(NamedTuple):
    rows: list[tuple[Any, ...]]
    rowcount: int


Row = tuple[bytes, bytes, int | None]  # key, value, expires_at


@dataclass(frozen=True)
class Dialect:
    """Statements common to the three databases; subclasses say what differs."""

    table: str = "kv_store"
    mark: ClassVar[str] = "%s"  # the driver's parameter placeholder
    for_update: ClassVar[str] = " FOR UPDATE"

    def __post_init__(self) -> None:
        if not (self.table.replace("_", "").isalnum() and self.table.isascii()):
            raise InvalidTable(f"table name {self.table!r}: letters, digits and _ only")

    def _marks(self, n: int) -> str:
        return ", ".join([self.mark] * n)

    def create(self) -> list[str]:
        raise NotImplementedError

    def select(self, key: bytes, *, lock: bool = False) -> Stmt:
        m = self.mark
        sql = f"SELECT v, expires_at FROM {self.table} WHERE k = {m}"
        return Stmt(sql + (self.for_update if lock else ""), (key,))

    def select_many(self, keys: Sequence[bytes]) -> Stmt:
        sql = f"SELECT k, v, expires_at FROM {self.table} WHERE k IN ({self._marks(len(keys))})"
        return Stmt(sql, tuple(keys))

    def upsert(self, rows: Sequence[Row]) -> Stmt:
        """Insert or overwrite every row, in one statement (keys must be distinct)."""
        values = ", ".join([f"({self._marks(3)})"] * len(rows))
        sql = f"INSERT INTO {self.table} (k, v, expires_at) VALUES {values} {self.on_conflict()}"
        return Stmt(sql, [field for row in rows for field in row])

    def on_conflict(self) -> str:
        return "ON CONFLICT (k) DO UPDATE SET v = excluded.v, expires_at = excluded.expires_at"

    def insert_if_absent(self, row: Row) -> Stmt:
        """Insert the row; rowcount 0 if the key is there (expired or not)."""
        sql = f"INSERT INTO {self.table} (k, v, expires_at) VALUES ({self._marks(3)})"
        return Stmt(sql + " ON CONFLICT (k) DO NOTHING", row)

    def update(self, key: bytes, value: bytes, expires_at: int | None) -> Stmt:
        m = self.mark
        sql = f"UPDATE {self.table} SET v = {m}, expires_at = {m} WHERE k = {m}"
        return Stmt(sql, (value, expires_at, key))

    def update_value(self, key: bytes, value: bytes) -> Stmt:
        m = self.mark
        return Stmt(f"UPDATE {self.table} SET v = {m} WHERE k = {m}", (value, key))

    def update_expiry(self, key: bytes, expires_at: int | None) -> Stmt:
        m = self.mark
        return Stmt(f"UPDATE {self.table} SET expires_at = {m} WHERE k = {m}", (expires_at, key))

    def delete_alive(self, keys: Sequence[bytes], now: int, deleted: int) -> Stmt:
        """Mark live keys deleted (expired); rowcount: how many were alive."""
        m = self.mark
        sql = (
            f"UPDATE {self.table} SET expires_at = {m} WHERE k IN ({self._marks(len(keys))}) "
            f"AND (expires_at IS NULL OR expires_at > {m})"
        )
        return Stmt(sql, (deleted, *keys, now))

    def scan(self, start: bytes, end: bytes | None, after: bytes | None, now: int, n: int) -> Stmt:
        """Up to n live keys in [start, end), greater than `after`, in key order."""
        m = self.mark
        where = [f"k >= {m}"]
        params: list[Any] = [start]
        if end is not None:
            where.append(f"k < {m}")
            params.append(end)
        if after is not None:
            where.append(f"k > {m}")
            params.append(after)
        where.append(f"(expires_at IS NULL OR expires_at > {m})")
        params += [now, n]
        sql = f"SELECT k FROM {self.table} WHERE {' AND '.join(where)} ORDER BY k LIMIT {m}"
        return Stmt(sql, params)

    def count_alive(self, now: int) -> Stmt:
        m = self.mark
        sql = f"SELECT COUNT(*) FROM {self.table} WHERE expires_at IS NULL OR expires_at > {m}"
        return Stmt(sql, (now,))

    def sweep(self, now: int, n: int) -> Stmt:
        """Remove up to n expired rows, in one short statement."""
        raise NotImplementedError


@dataclass(frozen=True)
class SQLiteDialect(Dialect):
    mark: ClassVar[str] = "?"
    for_update: ClassVar[str] = ""  # a write transaction (BEGIN IMMEDIATE) locks the file

    def create(self) -> list[str]:
        t = self.table
        return [
            f"CREATE TABLE IF NOT EXISTS {t} "
            "(k BLOB PRIMARY KEY, v BLOB NOT NULL, expires_at INTEGER) WITHOUT ROWID",
            f"CREATE INDEX IF NOT EXISTS {t}_expires_at ON {t} (expires_at) "
            "WHERE expires_at IS NOT NULL",
        ]

    def sweep(self, now: int, n: int) -> Stmt:
        t = self.table
        sql = f"DELETE FROM {t} WHERE k IN (SELECT k FROM {t} WHERE expires_at <= ? LIMIT ?)"
        return Stmt(sql, (now, n))


@dataclass(frozen=True)
class MariaDBDialect(Dialect):
    def create(self) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            f"k VARBINARY(1024) NOT NULL PRIMARY KEY, v LONGBLOB NOT NULL, "
            f"expires_at BIGINT NULL, INDEX {self.table}_expires_at (expires_at)"
            ") ENGINE=InnoDB"
        ]

    def on_conflict(self) -> str:
        # The VALUES() form: MariaDB has no `excluded` row.
        return "ON DUPLICATE KEY UPDATE v = VALUES(v), expires_at = VALUES(expires_at)"

    def insert_if_absent(self, row: Row) -> Stmt:
        # `k = k` changes nothing, so rowcount is 0 on a duplicate (the connection does not
        # ask for CLIENT_FOUND_ROWS); INSERT IGNORE would also hide other errors.
        sql = f"INSERT INTO {self.table} (k, v, expires_at) VALUES (%s, %s, %s)"
        return Stmt(sql + " ON DUPLICATE KEY UPDATE k = k", row)

    def sweep(self, now: int, n: int) -> Stmt:
        # A range on the expiry index; under READ COMMITTED only the rows deleted are locked.
        return Stmt(f"DELETE FROM {self.table} WHERE expires_at <= %s LIMIT %s", (now, n))


@dataclass(frozen=True)
class PostgresDialect(Dialect):
    def create(self) -> list[str]:
        t = self.table
        return [
            f"CREATE TABLE IF NOT EXISTS {t} "
            "(k BYTEA PRIMARY KEY, v BYTEA NOT NULL, expires_at BIGINT)",
            f"CREATE INDEX IF NOT EXISTS {t}_expires_at ON {t} (expires_at) "
            "WHERE expires_at IS NOT NULL",
        ]

    def sweep(self, now: int, n: int) -> Stmt:
        # SKIP LOCKED: rows a writer is reviving right now are left for the next round,
        # and the outer condition is checked again on the row as it is when deleted.
        t = self.table
        sql = (
            f"DELETE FROM {t} WHERE k IN (SELECT k FROM {t} WHERE expires_at <= %s "
            f"LIMIT %s FOR UPDATE SKIP LOCKED) AND expires_at <= %s"
        )
        return Stmt(sql, (now, n, now))
