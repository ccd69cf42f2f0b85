"""The one SQL layer: every sdlab system that speaks SQL speaks it through here.

    from sdlab import sql

    async with sql.Database("postgresql://postgres@127.0.0.1:5432/shop") as db:
        async with db.transaction() as tx:
            await tx.execute("UPDATE seats SET user_id = %s WHERE id = %s", (7, 12))
    # a deadlock raises sql.Deadlock, a lock wait sql.LockWaitTimeout, whatever the engine

- `urls`: engine, database and address of a URL; `with_database` without string surgery
- `dialect`: placeholders, quoting (one rule for names), upsert, per engine
- `errors`: named errors classified from the drivers' codes
- `database`: `Session` (one connection), `Database` (a pool of them), `connect()`
- `admin`: `ensure_database`, `drop_database`, `scratch_database`, `ensure_schema`
"""

from sdlab.sql.admin import drop_database, ensure_database, ensure_schema, scratch_database
from sdlab.sql.database import ISOLATION_LEVELS, Database, Isolation, Result, Session, connect
from sdlab.sql.dialect import MARIADB, POSTGRESQL, SQLITE, Dialect, dialect_for, identifier
from sdlab.sql.errors import (
    ConnectionLost,
    ConstraintViolation,
    DatabaseUnavailable,
    Deadlock,
    DuplicateKey,
    InvalidIdentifier,
    LockWaitTimeout,
    QueryTimeout,
    SerializationFailure,
    SQLError,
    TransactionRolledBack,
    UnknownDatabase,
    translate,
)
from sdlab.sql.urls import Engine, address_of, database_of, engine_of, redact, with_database

__all__ = [
    "ISOLATION_LEVELS",
    "MARIADB",
    "POSTGRESQL",
    "SQLITE",
    "ConnectionLost",
    "ConstraintViolation",
    "Database",
    "DatabaseUnavailable",
    "Deadlock",
    "Dialect",
    "DuplicateKey",
    "Engine",
    "InvalidIdentifier",
    "Isolation",
    "LockWaitTimeout",
    "QueryTimeout",
    "Result",
    "SQLError",
    "SerializationFailure",
    "Session",
    "TransactionRolledBack",
    "UnknownDatabase",
    "address_of",
    "connect",
    "database_of",
    "dialect_for",
    "drop_database",
    "engine_of",
    "ensure_database",
    "ensure_schema",
    "identifier",
    "redact",
    "scratch_database",
    "translate",
    "with_database",
]
