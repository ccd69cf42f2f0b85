"""The SQL of each database: one table, its statements, and the native upsert.

    kv_store (k      binary key, primary key (rows are clustered by key),
              v      binary value,
              expires_at  ms since the epoch; NULL: never; past (or -1): gone)
    + an index on expires_at, for the sweeper

Every statement is a `Stmt` (text and parameters) that the backends run; the scripts in
`ops.py` decide which to run, so the rules live once for all three databases. The
statements are kv's; how each engine spells a placeholder, a quoted name or an upsert,
and which table names are allowed, is `sdlab.sql`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar, NamedTuple

from sdlab.kv.core import KVError
from sdlab.sql import MARIADB, POSTGRESQL, SQLITE, Engine, InvalidIdentifier, Result
from sdlab.sql import Dialect as Spelling

__all__ = ["DIALECTS", "Dialect", "InvalidTable", "Result", "Row", "Stmt"]


class InvalidTable(KVError, InvalidIdentifier):
    """A table name that is not a plain SQL name (`sdlab.sql.identifier`): it is written
    into the SQL."""


class Stmt(NamedTuple):
    sql: str
    params: Sequence[Any] = ()


Row = tuple[bytes, bytes, int | None]  # key, value, expires_at
COLUMNS = ("k", "v", "expires_at")


@lru_cache(maxsize=256)
def _insert(spelling: Spelling, table: str, rows: int, overwrite: bool) -> str:
    """An upsert (`overwrite`) or insert-if-absent of `rows` rows, built once per size:
    batches repeat a few sizes, and the text costs more to build than to look up."""
    if overwrite:
        return spelling.upsert(table, COLUMNS, key=COLUMNS[:1], rows=rows)
    return spelling.insert_ignore(table, COLUMNS, key=COLUMNS[:1], rows=rows)


@dataclass(frozen=True)
class Dialect:
    """Statements common to the three databases; subclasses say what differs."""

    table: str = "kv_store"
    quoted: str = field(init=False, repr=False, compare=False)  # the table, as in the SQL
    sql: ClassVar[Spelling]  # the engine's placeholders, quoting and upserts
    for_update: ClassVar[str] = " FOR UPDATE"

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "quoted", self.sql.quote(self.table))
        except InvalidIdentifier:
            plain = self.table.replace("_", "").isalnum() and self.table.isascii()
            rule = " (a letter or _ first, at most 63)" if plain else ""
            raise InvalidTable(
                f"table name {self.table!r}: letters, digits and _ only{rule}"
            ) from None

    def create(self) -> list[str]:
        raise NotImplementedError

    def select(self, key: bytes, *, lock: bool = False) -> Stmt:
        p = self.sql.placeholder
        sql = f"SELECT v, expires_at FROM {self.quoted} WHERE k = {p}"
        return Stmt(sql + (self.for_update if lock else ""), (key,))

    def select_many(self, keys: Sequence[bytes]) -> Stmt:
        marks = self.sql.marks(len(keys))
        return Stmt(f"SELECT k, v, expires_at FROM {self.quoted} WHERE k IN ({marks})", tuple(keys))

    def upsert(self, rows: Sequence[Row]) -> Stmt:
        """Insert or overwrite every row, in one statement (keys must be distinct)."""
        sql = _insert(self.sql, self.table, len(rows), True)
        return Stmt(sql, [field for row in rows for field in row])

    def insert_if_absent(self, row: Row) -> Stmt:
        """Insert the row; rowcount 0 if the key is there (expired or not)."""
        return Stmt(_insert(self.sql, self.table, 1, False), row)

    def update(self, key: bytes, value: bytes, expires_at: int | None) -> Stmt:
        p = self.sql.placeholder
        sql = f"UPDATE {self.quoted} SET v = {p}, expires_at = {p} WHERE k = {p}"
        return Stmt(sql, (value, expires_at, key))

    def update_value(self, key: bytes, value: bytes) -> Stmt:
        p = self.sql.placeholder
        return Stmt(f"UPDATE {self.quoted} SET v = {p} WHERE k = {p}", (value, key))

    def update_expiry(self, key: bytes, expires_at: int | None) -> Stmt:
        p = self.sql.placeholder
        sql = f"UPDATE {self.quoted} SET expires_at = {p} WHERE k = {p}"
        return Stmt(sql, (expires_at, key))

    def delete_alive(self, keys: Sequence[bytes], now: int, deleted: int) -> Stmt:
        """Mark live keys deleted (expired); rowcount: how many were alive."""
        p = self.sql.placeholder
        sql = (
            f"UPDATE {self.quoted} SET expires_at = {p} "
            f"WHERE k IN ({self.sql.marks(len(keys))}) AND (expires_at IS NULL OR expires_at > {p})"
        )
        return Stmt(sql, (deleted, *keys, now))

    def scan(self, start: bytes, end: bytes | None, after: bytes | None, now: int, n: int) -> Stmt:
        """Up to n live keys in [start, end), greater than `after`, in key order."""
        p = self.sql.placeholder
        where = [f"k >= {p}"]
        params: list[Any] = [start]
        if end is not None:
            where.append(f"k < {p}")
            params.append(end)
        if after is not None:
            where.append(f"k > {p}")
            params.append(after)
        where.append(f"(expires_at IS NULL OR expires_at > {p})")
        params += [now, n]
        sql = f"SELECT k FROM {self.quoted} WHERE {' AND '.join(where)} ORDER BY k LIMIT {p}"
        return Stmt(sql, params)

    def count_alive(self, now: int) -> Stmt:
        p = self.sql.placeholder
        sql = f"SELECT COUNT(*) FROM {self.quoted} WHERE expires_at IS NULL OR expires_at > {p}"
        return Stmt(sql, (now,))

    def sweep(self, now: int, n: int) -> Stmt:
        """Remove up to n expired rows, in one short statement."""
        raise NotImplementedError

    def _index(self) -> str:
        return self.sql.quote(f"{self.table}_expires_at")

    def _sweepers_index(self) -> str:
        """The index on expires_at, of only the rows that expire (SQLite, PostgreSQL)."""
        return (
            f"CREATE INDEX IF NOT EXISTS {self._index()} ON {self.quoted} (expires_at) "
            "WHERE expires_at IS NOT NULL"
        )


@dataclass(frozen=True)
class SQLiteDialect(Dialect):
    sql: ClassVar[Spelling] = SQLITE
    for_update: ClassVar[str] = ""  # a write transaction (BEGIN IMMEDIATE) locks the file

    def create(self) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {self.quoted} "
            "(k BLOB PRIMARY KEY, v BLOB NOT NULL, expires_at INTEGER) WITHOUT ROWID",
            self._sweepers_index(),
        ]

    def sweep(self, now: int, n: int) -> Stmt:
        t, p = self.quoted, self.sql.placeholder
        sql = f"DELETE FROM {t} WHERE k IN (SELECT k FROM {t} WHERE expires_at <= {p} LIMIT {p})"
        return Stmt(sql, (now, n))


@dataclass(frozen=True)
class MariaDBDialect(Dialect):
    # Its insert_if_absent is `ON DUPLICATE KEY UPDATE k = k`: that changes nothing, so
    # rowcount is 0 on a duplicate (the connection does not ask for CLIENT_FOUND_ROWS).
    sql: ClassVar[Spelling] = MARIADB

    def create(self) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {self.quoted} ("
            f"k VARBINARY(1024) NOT NULL PRIMARY KEY, v LONGBLOB NOT NULL, "
            f"expires_at BIGINT NULL, INDEX {self._index()} (expires_at)"
            ") ENGINE=InnoDB"
        ]

    def sweep(self, now: int, n: int) -> Stmt:
        # A range on the expiry index; under READ COMMITTED only the rows deleted are locked.
        p = self.sql.placeholder
        return Stmt(f"DELETE FROM {self.quoted} WHERE expires_at <= {p} LIMIT {p}", (now, n))


@dataclass(frozen=True)
class PostgresDialect(Dialect):
    sql: ClassVar[Spelling] = POSTGRESQL

    def create(self) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {self.quoted} "
            "(k BYTEA PRIMARY KEY, v BYTEA NOT NULL, expires_at BIGINT)",
            self._sweepers_index(),
        ]

    def sweep(self, now: int, n: int) -> Stmt:
        # SKIP LOCKED: rows a writer is reviving right now are left for the next round,
        # and the outer condition is checked again on the row as it is when deleted.
        t, p = self.quoted, self.sql.placeholder
        sql = (
            f"DELETE FROM {t} WHERE k IN (SELECT k FROM {t} WHERE expires_at <= {p} "
            f"LIMIT {p} FOR UPDATE SKIP LOCKED) AND expires_at <= {p}"
        )
        return Stmt(sql, (now, n, now))


DIALECTS: dict[Engine, type[Dialect]] = {
    "sqlite": SQLiteDialect,
    "mariadb": MariaDBDialect,
    "postgresql": PostgresDialect,
}
