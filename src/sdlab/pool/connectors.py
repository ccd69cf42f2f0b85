"""What the pool needs to know about a driver: how to open, check, clean and close.

The pool itself is driver-agnostic. A `Connector` carries everything specific to one
driver; sdlab ships one for asyncmy (MariaDB/MySQL) and one for psycopg 3 (PostgreSQL),
and `factory()` wraps any `async def connect()` for drivers with nothing more to say.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

import asyncmy
import psycopg
from psycopg.pq import TransactionStatus

C = TypeVar("C")


class Connector(Protocol[C]):
    """Driver knowledge for `Pool`. Only `connect` and `close` may do I/O unasked."""

    async def connect(self) -> C:
        """Open a new connection (raise on failure; the pool retries with backoff)."""
        ...

    async def close(self, conn: C) -> None:
        """Close a connection, politely if possible; never raise."""
        ...

    def is_broken(self, conn: C) -> bool:
        """True if the connection is known to be unusable, without any I/O."""
        ...

    def in_transaction(self, conn: C) -> bool:
        """True if a transaction is open (or failed) on it, without any I/O."""
        ...

    async def rollback(self, conn: C) -> None:
        """End the open transaction; raise if the connection cannot."""
        ...

    async def check(self, conn: C) -> None:
        """One round trip to the server; raise if it does not answer."""
        ...


def connect_args(url: str) -> dict[str, Any]:
    """Keyword arguments for asyncmy (and aiomysql) from a `mysql://` URL."""
    parts = urlsplit(url)
    args: dict[str, Any] = {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": unquote(parts.username or "root"),
        "password": unquote(parts.password or ""),
    }
    database = parts.path.lstrip("/")
    if database:
        args["db"] = database
    return args


class MariaDB:
    """asyncmy connections to MariaDB or MySQL. Connections are opened with
    `autocommit=False` (the driver's default) unless `connect_kwargs` say otherwise."""

    def __init__(self, url: str, **connect_kwargs: Any) -> None:
        self.url = url
        self._kwargs = {**connect_args(url), **connect_kwargs}

    def __repr__(self) -> str:
        return f"MariaDB({self._kwargs['host']}:{self._kwargs['port']})"

    async def connect(self) -> asyncmy.Connection:
        return await asyncmy.connect(**self._kwargs)

    async def close(self, conn: asyncmy.Connection) -> None:
        try:
            await conn.ensure_closed()
        except Exception:
            conn.close()

    def is_broken(self, conn: asyncmy.Connection) -> bool:
        # asyncmy closes a connection whose read was cancelled or failed mid-packet.
        return not conn.connected or bool(getattr(conn, "_stream_broken", False))

    def in_transaction(self, conn: asyncmy.Connection) -> bool:
        return bool(conn.get_transaction_status())

    async def rollback(self, conn: asyncmy.Connection) -> None:
        await conn.rollback()

    async def check(self, conn: asyncmy.Connection) -> None:
        await conn.ping(reconnect=False)


_UNUSABLE = frozenset({TransactionStatus.ACTIVE, TransactionStatus.UNKNOWN})
_IN_TRANSACTION = frozenset({TransactionStatus.INTRANS, TransactionStatus.INERROR})


class PostgreSQL:
    """psycopg 3 async connections."""

    def __init__(self, url: str, **connect_kwargs: Any) -> None:
        self.url = url
        self._kwargs = connect_kwargs

    def __repr__(self) -> str:
        return f"PostgreSQL({self.url.rpartition('@')[2]})"

    async def connect(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(self.url, **self._kwargs)

    async def close(self, conn: psycopg.AsyncConnection[Any]) -> None:
        try:
            await conn.close()
        except Exception:
            conn.pgconn.finish()

    # libpq's own status (an int): cheaper than conn.info, which wraps it in an enum.
    def is_broken(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        # ACTIVE: handed back in the middle of a command; UNKNOWN: closed, or the socket
        # is gone.
        return conn.pgconn.transaction_status in _UNUSABLE

    def in_transaction(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        return conn.pgconn.transaction_status in _IN_TRANSACTION

    async def rollback(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.rollback()

    async def check(self, conn: psycopg.AsyncConnection[Any]) -> None:
        # An empty query: one round trip, no parsing. In autocommit, or psycopg would
        # send BEGIN first and lend the connection inside a transaction.
        if conn.autocommit:
            await conn.execute("")
            return
        await conn.set_autocommit(True)
        try:
            await conn.execute("")
        finally:
            await conn.set_autocommit(False)


class Factory:
    """A connector from any `async def connect()`: closes with `close()`, `aclose()` or
    `ensure_closed()`, whichever the connection has, and knows nothing of transactions."""

    def __init__(self, connect: Callable[[], Awaitable[Any]]) -> None:
        self._connect = connect

    def __repr__(self) -> str:
        return f"Factory({getattr(self._connect, '__qualname__', self._connect)!r})"

    async def connect(self) -> Any:
        return await self._connect()

    async def close(self, conn: Any) -> None:
        for name in ("ensure_closed", "aclose", "close"):
            method = getattr(conn, name, None)
            if method is not None:
                try:
                    result = method()
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    pass
                return

    def is_broken(self, conn: Any) -> bool:
        return bool(getattr(conn, "closed", False))

    def in_transaction(self, conn: Any) -> bool:
        return False

    async def rollback(self, conn: Any) -> None:
        return None

    async def check(self, conn: Any) -> None:
        return None
