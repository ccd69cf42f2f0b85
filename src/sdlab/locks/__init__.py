"""Remote locks: one Redis, a Redlock quorum, the databases' own locks, and fencing.

    from sdlab.locks import RedisLock

    async with RedisLock(redis_client, "invoice-42", ttl=10, timeout=5) as lock:
        ...                                   # lock.fence: this acquisition's token

`lock.py` is the shared behaviour (waiting, errors); `redis_lock.py`, `redlock.py` and
`sql_locks.py` the backends; `fencing.py` the resource that refuses stale holders.
"""

from sdlab.locks.fencing import FencedStore
from sdlab.locks.lock import Lock, LockError, LockLost, LockTimeout, StaleToken
from sdlab.locks.redis_lock import RedisLock
from sdlab.locks.redlock import NotDurable, Redlock
from sdlab.locks.sql_locks import MariaDBLock, PostgresLock

__all__ = [
    "FencedStore",
    "Lock",
    "LockError",
    "LockLost",
    "LockTimeout",
    "MariaDBLock",
    "NotDurable",
    "PostgresLock",
    "RedisLock",
    "Redlock",
    "StaleToken",
]
