"""Databases themselves: create one if missing, drop one, a scratch one for a test run.

    url = await ensure_database("mysql://root@127.0.0.1:3306/shop")   # CREATE if missing
    async with scratch_database(server_url, prefix="checkin") as url:  # dropped afterwards
        ...
    await ensure_schema(db, ["CREATE TABLE IF NOT EXISTS ..."], lock="shop")

On PostgreSQL, `CREATE DATABASE` cannot run in a transaction and has no IF NOT EXISTS,
and two sessions running `CREATE TABLE IF NOT EXISTS` at once can collide in the
catalogue; both are handled here, once.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path

from sdlab.sql.database import Database, Session, connect
from sdlab.sql.dialect import identifier
from sdlab.sql.errors import SQLError
from sdlab.sql.urls import database_of, engine_of, with_database

_POSTGRES_MAINTENANCE = "postgres"


async def ensure_database(url: str, *, default: str | None = None) -> str:
    """Create the database `url` names if it is not there; return the URL to use.

    A URL with no database gets `default` (an error if there is none). SQLite: the
    file's folder is created; the file appears on first use."""
    engine = engine_of(url)
    name = database_of(url)
    if engine == "sqlite":
        if name and name != ":memory:":
            Path(name).parent.mkdir(parents=True, exist_ok=True)
        return url
    if not name:
        if default is None:
            raise ValueError(f"{url!r} names no database")
        name, url = default, with_database(url, default)
    identifier(name)
    admin = await connect(_server_url(url), isolation=None)
    try:
        if engine == "mariadb":
            await admin.run(f"CREATE DATABASE IF NOT EXISTS `{name}`")
        elif not await admin.fetchone("SELECT 1 FROM pg_database WHERE datname = %s", (name,)):
            try:
                await admin.run(f'CREATE DATABASE "{name}"')
            except SQLError as exc:
                if exc.code not in ("42P04", "23505"):  # created meanwhile by another
                    raise
    finally:
        await admin.close()
    return url


async def drop_database(url: str) -> None:
    """Drop the database `url` names, if it is there (PostgreSQL: ending its sessions)."""
    engine = engine_of(url)
    name = database_of(url)
    if engine == "sqlite":
        _remove_sqlite(name)
        return
    identifier(name)
    admin = await connect(_server_url(url), isolation=None)
    try:
        if engine == "mariadb":
            await admin.run(f"DROP DATABASE IF EXISTS `{name}`")
        else:
            await admin.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@asynccontextmanager
async def scratch_database(url: str, *, prefix: str = "sdlab") -> AsyncIterator[str]:
    """A new, empty database on the server of `url`, named `<prefix>_<random>`; its URL
    for the block, dropped afterwards (whatever the block did)."""
    name = identifier(f"{prefix}_{uuid.uuid4().hex[:10]}")
    scratch = with_database(url, name)
    await ensure_database(scratch)
    try:
        yield scratch
    finally:
        with suppress(SQLError):
            await drop_database(scratch)


async def ensure_schema(db: Database | Session, ddl: Sequence[str], *, lock: str) -> None:
    """Run `CREATE ... IF NOT EXISTS` statements, safely from many processes at once:
    on PostgreSQL inside one transaction holding the advisory lock `lock`."""
    if isinstance(db, Database):
        async with db.session() as session:
            await ensure_schema(session, ddl, lock=lock)
        return
    if db.dialect.engine == "mariadb":  # DDL commits by itself here; IF NOT EXISTS is safe
        for statement in ddl:
            await db.run(statement)
        return
    async with db.transaction():
        await db.run("SELECT pg_advisory_xact_lock(hashtext(%s))", (lock,))
        for statement in ddl:
            await db.run(statement)


def _remove_sqlite(name: str) -> None:
    if name and name != ":memory:":
        for suffix in ("", "-wal", "-shm"):
            Path(name + suffix).unlink(missing_ok=True)


def _server_url(url: str) -> str:
    """Where to connect to create or drop `url`'s database: none on MariaDB, the
    maintenance database on PostgreSQL (one cannot drop the database one is in)."""
    if engine_of(url) == "mariadb":
        return with_database(url, "")
    return with_database(url, _POSTGRES_MAINTENANCE)
