"""The cause of a failure in one line, for error messages and logs: no traceback, no
driver noise. Light on purpose (the standard library only), so libraries can use it."""

from __future__ import annotations

import errno
import socket


def describe(exc: BaseException) -> str:
    """One line that says why a connection, probe or request failed."""
    if isinstance(exc, TimeoutError):
        return "no answer in time (timed out)"
    if isinstance(exc, ConnectionRefusedError) or (
        isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED
    ):  # aiormq's AMQPConnectionError is an OSError of that errno, not the subclass
        return "connection refused (nothing listens there)"
    if isinstance(exc, socket.gaierror):
        return f"host name does not resolve ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    # DB-API drivers put (code, message) in args; the message is what a user wants.
    if len(exc.args) == 2 and isinstance(exc.args[0], int) and isinstance(exc.args[1], str):
        first = exc.args[1]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def socket_error(exc: BaseException) -> OSError | None:
    """The socket's own error under a driver's (asyncmy's 2003, aiormq's, a channel's):
    the first OSError with an errno, or a timeout, in `exc`'s chain of causes."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and (seen.errno is not None or isinstance(seen, TimeoutError)):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
