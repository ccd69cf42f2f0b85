"""A key-value store on a relational database, speaking HTTP and the Redis protocol.

    from sdlab.kv import Store

    async with Store("sqlite:///kv.sqlite3") as kv:     # or mysql://..., postgresql://...
        await kv.set("session:42", "alice", ttl=3600)
        await kv.get("session:42")                        # b'alice'

`core.py` holds the rules, `sql.py` each database's statements, `ops.py` the operations
as scripts of statements, `backends.py` the drivers, `batching.py` group commit,
`sweeper.py` the removal of expired rows, `store.py` the API; the Redis protocol is
`resp.py` (framing), `server.py` (connections), `ordering.py` (the order a connection's
commands run in), `commands.py` (the command table), `transaction.py` (MULTI and WATCH)
and `match.py` (SCAN's patterns); `service.py` the HTTP API and both servers together.
"""

from sdlab.kv.backends import Backend, UnknownBackend, backend_for
from sdlab.kv.core import (
    DEFAULT_MAX_VALUE,
    MAX_KEY_BYTES,
    InvalidKey,
    InvalidTTL,
    KVError,
    NotAnInteger,
    StoreClosed,
    ValueTooLarge,
)
from sdlab.kv.sql import InvalidTable
from sdlab.kv.store import BackendUnavailable, Store

__all__ = [
    "DEFAULT_MAX_VALUE",
    "MAX_KEY_BYTES",
    "Backend",
    "BackendUnavailable",
    "InvalidKey",
    "InvalidTTL",
    "InvalidTable",
    "KVError",
    "NotAnInteger",
    "Store",
    "StoreClosed",
    "UnknownBackend",
    "ValueTooLarge",
    "backend_for",
]
