"""Named errors for what a database says, whichever driver said it.

Code that retries a deadlock or reports a lock-wait timeout catches `Deadlock` or
`LockWaitTimeout`, not asyncmy's `OperationalError(1213, ...)` or psycopg's
`DeadlockDetected`. `translate()` maps a driver's exception to one of these by the
server's error code (MariaDB's number, PostgreSQL's SQLSTATE, SQLite's extended code);
the driver's exception stays as `__cause__`, and `code` keeps the number or SQLSTATE.

    SQLError
      Deadlock              MariaDB 1213, PostgreSQL 40P01   retry the whole transaction
      SerializationFailure  MariaDB 1020, PostgreSQL 40001   retry the whole transaction
      LockWaitTimeout       MariaDB 1205, PostgreSQL 55P03   (NOWAIT, lock_wait_timeout,
                                                              lock_timeout; SQLite busy)
      QueryTimeout          MariaDB 1969, PostgreSQL 57014   max_statement_time, statement_timeout
      ConstraintViolation   MariaDB 1048/1451/1452/4025, PostgreSQL 23xxx
        DuplicateKey        MariaDB 1062/1586, PostgreSQL 23505, SQLite UNIQUE/PRIMARY KEY
      TransactionRolledBack COMMIT rolled back instead (PostgreSQL, after a failed statement)
      ConnectionLost        the session died mid-use: whether the last COMMIT happened is
                            unknown
      DatabaseUnavailable   no session could be opened (refused, unreachable, bad login)
      InvalidIdentifier     a table or column name this layer will not write into SQL
      UnknownDatabase       a URL whose scheme names no engine we speak
"""

from __future__ import annotations

import sqlite3
from typing import ClassVar

import asyncmy.errors
import psycopg

from sdlab.failure import describe


class SQLError(Exception):
    """An error from the database or about talking to it. `code` is the server's own
    (MariaDB's error number, PostgreSQL's SQLSTATE), or None."""

    retryable: ClassVar[bool] = False
    """True if running the whole transaction again may succeed (nothing of it stayed)."""

    def __init__(self, message: str, *, code: int | str | None = None) -> None:
        super().__init__(message)
        self.code = code


class Deadlock(SQLError):
    """The server rolled this transaction back to break a deadlock."""

    retryable = True


class SerializationFailure(SQLError):
    """The transaction could not be serialized with a concurrent one and was rolled back."""

    retryable = True


class LockWaitTimeout(SQLError):
    """A lock was not granted in time (or at once, with NOWAIT). On MariaDB only the
    statement is rolled back, not the transaction; on PostgreSQL the transaction fails."""


class QueryTimeout(SQLError):
    """The statement ran past its time limit: cancelled by the server (max_statement_time,
    statement_timeout; `code` set), or no answer within a session's `query_timeout`
    (`code` None; the connection was dropped, the statement may have run)."""


class ConstraintViolation(SQLError):
    """A row would break a constraint (not null, foreign key, check, unique)."""


class DuplicateKey(ConstraintViolation):
    """A row with that primary or unique key is already there."""


class TransactionRolledBack(SQLError):
    """COMMIT was answered with a rollback: on PostgreSQL, a statement of the
    transaction had failed (the error was caught and the block went on), so the server
    rolled all of it back. psycopg reports that COMMIT as a success."""


class ConnectionLost(SQLError):
    """The session died while in use. If it was committing, nobody knows whether the
    commit happened: the caller must find out, not blindly run it again."""


class DatabaseUnavailable(SQLError):
    """No session could be opened: the server refused, is unreachable, or the login failed.
    Raised by this layer with the server's `service` (MariaDB, PostgreSQL), `address`
    (host:port) and the `reason` in one line, so that a command can say which server it
    could not reach, wherever its URL came from."""

    def __init__(
        self,
        message: str,
        *,
        code: int | str | None = None,
        service: str = "",
        address: str = "",
        reason: str = "",
    ) -> None:
        super().__init__(message, code=code)
        self.service, self.address, self.reason = service, address, reason


class InvalidIdentifier(SQLError, ValueError):
    """A name this layer will not write into SQL (see `sdlab.sql.identifier`)."""


class UnknownDatabase(SQLError, ValueError):
    """A database URL whose scheme names no engine this layer speaks."""


_MARIADB: dict[int, type[SQLError]] = {
    1213: Deadlock,
    1020: SerializationFailure,  # "Record has changed since last read" (snapshot isolation)
    1205: LockWaitTimeout,
    1969: QueryTimeout,  # max_statement_time
    1062: DuplicateKey,
    1586: DuplicateKey,
    1048: ConstraintViolation,
    1451: ConstraintViolation,
    1452: ConstraintViolation,
    4025: ConstraintViolation,
    # the session is gone (the client's 2xxx codes, and the server ending it)
    2006: ConnectionLost,
    2013: ConnectionLost,
    2014: ConnectionLost,
    2055: ConnectionLost,
    1053: ConnectionLost,  # server shutdown in progress
    1927: ConnectionLost,  # connection was killed
    # no session at all
    2003: DatabaseUnavailable,
    2005: DatabaseUnavailable,
    1045: DatabaseUnavailable,  # access denied
    1040: DatabaseUnavailable,  # too many connections
    1049: DatabaseUnavailable,  # unknown database
}

_POSTGRES: dict[str, type[SQLError]] = {
    "40P01": Deadlock,
    "40001": SerializationFailure,
    "55P03": LockWaitTimeout,
    "57014": QueryTimeout,
    "23505": DuplicateKey,
    "57P01": ConnectionLost,  # admin_shutdown
    "57P02": ConnectionLost,  # crash_shutdown
    "57P03": DatabaseUnavailable,  # cannot_connect_now (starting up)
    "28P01": DatabaseUnavailable,  # invalid password
    "28000": DatabaseUnavailable,  # invalid authorization
    "3D000": DatabaseUnavailable,  # database does not exist
    "53300": DatabaseUnavailable,  # too many connections
}

_SQLITE_UNIQUE = {1555, 2067}  # SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CONSTRAINT_UNIQUE
_SQLITE_BUSY = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED (and their extended codes, by & 0xff)


def translate(exc: BaseException, *, connecting: bool = False) -> SQLError | None:
    """The named error for a driver's exception (None if it is not one of theirs).

    `connecting`: the exception came from opening a session, so a network failure means
    the database is unavailable rather than a session lost mid-use."""
    if isinstance(exc, SQLError):
        return exc
    lost = DatabaseUnavailable if connecting else ConnectionLost
    if isinstance(exc, asyncmy.errors.MySQLError):
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        kind = _MARIADB.get(code, SQLError) if code is not None else SQLError
        if kind is ConnectionLost and connecting:
            kind = DatabaseUnavailable
        if code == 0 or isinstance(exc, asyncmy.errors.InterfaceError):
            kind = lost  # asyncmy's own: the connection was closed under it
        return kind(describe(exc), code=code)
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate
        if state is None:  # libpq's own failure: the socket, not the server, spoke
            return lost(describe(exc))
        return _postgres_kind(state, lost)(_first_line(exc), code=state)
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code in _SQLITE_UNIQUE:
            return DuplicateKey(str(exc), code=code)
        if isinstance(exc, sqlite3.IntegrityError):
            return ConstraintViolation(str(exc), code=code)
        if code is not None and code & 0xFF in _SQLITE_BUSY:
            return LockWaitTimeout(str(exc), code=code)
        return SQLError(str(exc), code=code)
    if isinstance(exc, TimeoutError) and not connecting:
        return None  # the caller's own deadline (asyncio.timeout), not the session's fault
    if isinstance(exc, OSError):  # ConnectionResetError, a refused or timed-out connect
        return lost(describe(exc))
    return None


def _postgres_kind(state: str, lost: type[SQLError]) -> type[SQLError]:
    if state in _POSTGRES:
        return _POSTGRES[state]
    if state.startswith("08"):  # connection exceptions
        return lost
    return ConstraintViolation if state.startswith("23") else SQLError


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
