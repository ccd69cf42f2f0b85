"""What differs in the SQL itself between MariaDB, PostgreSQL and SQLite.

    d = dialect_for("postgresql://...")
    d.quote("seats")                       # "seats"     (MariaDB: `seats`)
    d.marks(3)                             # %s, %s, %s  (SQLite: ?, ?, ?)
    d.for_share                            # FOR SHARE   (MariaDB 10.11: LOCK IN SHARE MODE)
    d.binary_collation                     # COLLATE "C": text sorted as Python sorts str
    d.upsert("seats", ["id", "user_id"], key=["id"])
        # INSERT INTO "seats" ("id", "user_id") VALUES (%s, %s)
        #   ON CONFLICT ("id") DO UPDATE SET "user_id" = excluded."user_id"

Names are checked by one rule (`identifier`) before they are written into SQL: an ASCII
letter or `_`, then letters, digits and `_`, at most 63 characters (PostgreSQL's limit;
MariaDB allows 64). Values always go as parameters, never into the text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sdlab.sql.errors import InvalidIdentifier
from sdlab.sql.urls import Engine, engine_of

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def identifier(name: str) -> str:
    """`name` if it is a plain SQL identifier, else `InvalidIdentifier`."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise InvalidIdentifier(
            f"{name!r} is not a plain SQL name: an ASCII letter or _, then letters, digits "
            "and _, at most 63 characters"
        )
    return name


@dataclass(frozen=True)
class Dialect:
    """One engine's spelling of the statements sdlab writes."""

    engine: Engine
    placeholder: str
    quote_char: str
    now: str  # the current time, to the microsecond, as the server sees it
    for_share: str = "FOR SHARE"  # after a SELECT: read-lock its rows until COMMIT
    binary_collation: str = ""  # after a text type: compare by code point, as Python does

    def quote(self, name: str) -> str:
        """A checked identifier, quoted for this engine."""
        return f"{self.quote_char}{identifier(name)}{self.quote_char}"

    def marks(self, n: int) -> str:
        """`n` parameter placeholders, comma-separated."""
        return ", ".join([self.placeholder] * n)

    def insert(self, table: str, columns: Sequence[str], rows: int = 1) -> str:
        """INSERT of `rows` rows of `columns` (parameters in row order)."""
        values = ", ".join([f"({self.marks(len(columns))})"] * rows)
        names = ", ".join(self.quote(c) for c in columns)
        return f"INSERT INTO {self.quote(table)} ({names}) VALUES {values}"

    def upsert(
        self,
        table: str,
        columns: Sequence[str],
        *,
        key: Sequence[str],
        update: Sequence[str] | None = None,
        rows: int = 1,
    ) -> str:
        """INSERT, or on a duplicate `key` overwrite `update` (default: every non-key
        column) with the new row's values."""
        insert = self.insert(table, columns, rows)
        changed = [c for c in columns if c not in key] if update is None else list(update)
        if not changed:
            return self.insert_ignore(table, columns, key=key, rows=rows)
        if self.engine == "mariadb":
            sets = ", ".join(f"{self.quote(c)} = VALUES({self.quote(c)})" for c in changed)
            return f"{insert} ON DUPLICATE KEY UPDATE {sets}"
        sets = ", ".join(f"{self.quote(c)} = excluded.{self.quote(c)}" for c in changed)
        keys = ", ".join(self.quote(c) for c in key)
        return f"{insert} ON CONFLICT ({keys}) DO UPDATE SET {sets}"

    def insert_ignore(
        self, table: str, columns: Sequence[str], *, key: Sequence[str], rows: int = 1
    ) -> str:
        """INSERT unless a row with that `key` exists (rowcount says which). On MariaDB
        this is `ON DUPLICATE KEY UPDATE k = k`, not INSERT IGNORE, which would also
        swallow other errors (a value too long, a NULL into NOT NULL)."""
        insert = self.insert(table, columns, rows)
        if self.engine == "mariadb":
            first = self.quote(key[0])
            return f"{insert} ON DUPLICATE KEY UPDATE {first} = {first}"
        keys = ", ".join(self.quote(c) for c in key)
        return f"{insert} ON CONFLICT ({keys}) DO NOTHING"


# MariaDB 10.11 has no FOR SHARE (MySQL 8 and MariaDB 11 do); LOCK IN SHARE MODE is the same.
MARIADB = Dialect(
    "mariadb",
    placeholder="%s",
    quote_char="`",
    now="NOW(6)",
    for_share="LOCK IN SHARE MODE",
    binary_collation="CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin",
)
POSTGRESQL = Dialect(
    "postgresql",
    placeholder="%s",
    quote_char='"',
    now="clock_timestamp()",
    binary_collation='COLLATE "C"',
)
SQLITE = Dialect(  # no row locks: a write transaction locks the whole file
    "sqlite",
    placeholder="?",
    quote_char='"',
    now="strftime('%Y-%m-%d %H:%M:%f', 'now')",
    for_share="",
    binary_collation="COLLATE BINARY",
)

_BY_ENGINE = {d.engine: d for d in (MARIADB, POSTGRESQL, SQLITE)}


def dialect_for(url_or_engine: str) -> Dialect:
    """The dialect of a database URL, or of an engine name."""
    engine = url_or_engine if url_or_engine in _BY_ENGINE else engine_of(url_or_engine)
    return _BY_ENGINE[engine]
