"""`Store`: the key-value store's API, on one table of a relational database.

    async with Store("sqlite:///kv.sqlite3") as kv:
        await kv.set("greeting", "hello", ttl=60)
        await kv.get("greeting")          # b'hello'

Keys and values are bytes (text is stored as UTF-8). Reads of keys made at the same time
share one statement (`batching.GroupRead`) and treat an expired row as absent. Writes go
through group commit (`batching.py`) unless `group_commit=False`, which gives each write
a transaction of its own (the naive way, kept for comparison). A background sweeper
(`sweeper.py`) removes expired rows.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, Self, TypeVar

from sdlab.kv import ops
from sdlab.kv.backends import Backend, backend_for
from sdlab.kv.batching import GroupCommit, GroupRead
from sdlab.kv.core import (
    DEFAULT_MAX_VALUE,
    InvalidTTL,
    Key,
    KVError,
    StoreClosed,
    Value,
    as_key,
    as_value,
    expiry_after,
    now_ms,
)
from sdlab.kv.sweeper import Sweeper

T = TypeVar("T")
DATABASES = 16  # as Redis's default `databases`


class BackendUnavailable(KVError):
    """The database failed: it could not be reached (or the table created) on open, or
    it failed a request (a lost connection, a server down, no connection within
    `timeout`). A write that met it may or may not have committed."""


class Store:
    """A key-value store in one table of SQLite, MariaDB or PostgreSQL."""

    def __init__(
        self,
        url: str = "sqlite://",
        *,
        group_commit: bool = True,
        max_batch: int = 1000,
        max_value: int = DEFAULT_MAX_VALUE,
        sweep_interval: float = 1.0,
        sweep_batch: int = 500,
        pool_size: int = 10,
        timeout: float = 30.0,
    ) -> None:
        """
        url: the backend (`sqlite:///FILE`, `sqlite://` for memory, `mysql://...`,
            `postgresql://...`; `?table=NAME` for another table than kv_store).
        group_commit: batch concurrent writes into one transaction (False: one each).
        max_batch: the most writes in one transaction.
        max_value: the longest value accepted, in bytes (longer: ValueTooLarge).
        sweep_interval, sweep_batch: how often the sweeper runs, and how many expired
            rows it removes per statement (an interval of 0: no sweeper).
        pool_size: connections to MariaDB or PostgreSQL.
        timeout: how long a request waits for one of those connections (seconds) before
            it fails with BackendUnavailable: while the database is down, say.
        """
        self.url = url
        self.max_value = max_value
        self.group_commit = group_commit
        self.backend: Backend = backend_for(url, pool_size=pool_size, timeout=timeout)
        self._batcher = GroupCommit(self.backend, max_batch=max_batch) if group_commit else None
        # SQLite reads on one thread; the servers on a pool: a few reads at once there.
        readers = 1 if self.backend.name.startswith("SQLite") else max(1, pool_size // 2)
        self._readers = [GroupRead(self.backend, concurrency=readers)]  # one per database
        self._dialects = [self.backend.dialect]  # database n's table (0: the table itself)
        self._databases: asyncio.Future[None] | None = None  # 1 to 15's tables created
        self._sweeper = Sweeper(
            self.backend, interval=sweep_interval, batch=sweep_batch, tables=self.dialects
        )
        self._sweeping = sweep_interval > 0
        self._open = False
        self._closed: asyncio.Future[None] | None = None
        self.naive_writes = 0
        # Called with each write as it is queued (the RESP server's WATCH listens here).
        self.listeners: list[Callable[[ops.Write], None]] = []

    async def open(self) -> None:
        try:
            await self.backend.open()
        except Exception as exc:
            raise BackendUnavailable(f"{self.backend.name}: {exc}") from exc
        if self._batcher is not None:
            self._batcher.start()
        if self._sweeping:
            self._sweeper.start()
        self._open = True

    async def close(self) -> None:
        """Stop the sweeper, commit the writes already queued, close the connections.

        A caller that stops waiting (cancelled, timed out) does not stop the close: it
        goes on to the end, so every queued write is answered, and close() again waits
        for it."""
        if self._closed is None:
            if not self._open:
                return
            self._open = False
            self._closed = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closed)

    async def _close(self) -> None:
        await self._sweeper.close()
        if self._batcher is not None:
            await self._batcher.close()
        for reader in self._readers:
            await reader.close()
        await self.backend.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        mode = "group commit" if self.group_commit else "one transaction per write"
        return f"Store({self.backend.name}, {mode})"

    # Writes

    async def apply(self, write: ops.Write) -> Any:
        """Run one write (an `ops` object); return once it is committed. The write is
        queued when this coroutine starts, so writes started in order commit in order."""
        try:
            for listener in self.listeners:
                listener(write)
            if self._batcher is not None:
                return await self._batcher.submit(write)
            if not self._open:
                raise StoreClosed("the store is closed")
            self.naive_writes += 1
            return await self.backend.write(lambda: write.script(self.backend.dialect, now_ms()))
        except KVError:
            raise
        except Exception as exc:
            raise self._failed(exc) from exc

    def submit(self, write: ops.Write) -> asyncio.Future[Any]:
        """Queue a write for group commit now, without a coroutine: `apply` for a caller
        that runs thousands of writes a second and can take a future (the RESP server).
        The future resolves once the write's batch commits; if it fails, pass its
        exception through `failure` to get what `apply` would raise."""
        if self._batcher is None:
            raise RuntimeError("submit() needs group commit: use apply()")
        for listener in self.listeners:
            listener(write)
        return self._batcher.submit(write)

    def failure(self, exc: Exception) -> Exception:
        """A failed write's exception as `apply` raises it: a KVError as it is, anything
        else (the driver's, the pool's) as BackendUnavailable."""
        return exc if isinstance(exc, KVError) else self._failed(exc)

    async def set(
        self,
        key: Key,
        value: Value,
        ttl: float | None = None,
        *,
        nx: bool = False,
        xx: bool = False,
        keep_ttl: bool = False,
    ) -> bool:
        """Store a value; with `ttl` (seconds) it expires. `nx`: only if the key does not
        exist; `xx`: only if it does; `keep_ttl`: keep the key's expiry. True if stored."""
        row_key, row_value = as_key(key), as_value(value, self.max_value)
        expires_at = None if ttl is None else expiry_after(_ms(ttl), now_ms())
        if nx and xx:
            raise ValueError("nx and xx exclude each other")
        if keep_ttl and ttl is not None:
            raise ValueError("ttl and keep_ttl exclude each other")
        if not (nx or xx or keep_ttl):
            return bool(await self.apply(ops.Put(((row_key, row_value, expires_at),))))
        write = ops.SetIf(row_key, row_value, expires_at, nx=nx, xx=xx, keep_ttl=keep_ttl)
        return bool(await self.apply(write))

    async def mset(self, items: Mapping[Key, Value] | Iterable[tuple[Key, Value]]) -> None:
        """Store several values at once (atomically), none of them expiring."""
        pairs = items.items() if isinstance(items, Mapping) else items
        rows = tuple((as_key(k), as_value(v, self.max_value), None) for k, v in pairs)
        if rows:
            await self.apply(ops.Put(rows))

    async def delete(self, *keys: Key) -> int:
        """Delete keys; how many existed."""
        return int(await self.apply(ops.Delete(tuple(as_key(k) for k in keys))))

    async def incr(self, key: Key, by: int = 1) -> int:
        """Add `by` to an integer value (a missing key counts as 0); the new value.
        NotAnInteger if the value is not a 64-bit decimal integer, or would overflow."""
        return int(await self.apply(ops.Incr(as_key(key), by)))

    async def expire(self, key: Key, ttl: float) -> bool:
        """Let a key expire `ttl` seconds from now (0 or less: delete it). True if the
        key exists."""
        if not isinstance(ttl, int | float) or not math.isfinite(ttl):
            raise InvalidTTL(f"a time to live is a number of seconds, not {ttl!r}")
        return await self.expire_at(key, expiry_after(math.ceil(ttl * 1000), now_ms()))

    async def expire_at(self, key: Key, when_ms: int) -> bool:
        """Let a key expire at a time (ms since the epoch). True if the key exists."""
        return bool(await self.apply(ops.Expire(as_key(key), expiry_after(when_ms, 0))))

    async def persist(self, key: Key) -> bool:
        """Remove a key's expiry. True if it had one."""
        return bool(await self.apply(ops.Persist(as_key(key))))

    # Reads

    async def read(self, script: ops.Script[T]) -> T:
        """Run a read script (`ops.get(...)`, say) on the backend."""
        if not self._open:
            raise StoreClosed("the store is closed")
        try:
            return await self.backend.read(script)
        except Exception as exc:
            raise self._failed(exc) from exc

    def lookup(self, keys: Iterable[bytes], db: int = 0) -> asyncio.Future[tuple[ops.Found, int]]:
        """The live rows of these keys (and maybe others), and the time they were read
        at, from one statement shared by every lookup of this loop turn (in database
        `db`, opened with `databases()`). If the future fails, pass its exception
        through `failure`."""
        if not self._open:
            raise StoreClosed("the store is closed")
        return self._readers[db].lookup(keys)

    async def find(self, lookup: ops.Lookup, db: int = 0) -> Any:
        """A lookup's answer (`ops.Lookup`), its read shared with others of this turn."""
        try:
            found, now = await self.lookup(lookup.keys, db)
        except KVError:
            raise
        except Exception as exc:
            raise self._failed(exc) from exc
        return lookup.answer(found, now)

    # Databases: Redis's SELECT 0 to 15. Database 0 is the table; n is the table
    # `<table>_db<n>`, all fifteen created together the first time one is asked for.

    async def databases(self) -> None:
        """Create the tables of databases 1 to 15 if this store has not yet."""
        if self._databases is None:
            self._databases = asyncio.ensure_future(self._create_databases())
        try:
            await asyncio.shield(self._databases)
        except Exception as exc:
            self._databases = None  # try again next time
            raise self._failed(exc) from exc

    async def _create_databases(self) -> None:
        main = self.backend.dialect
        made = [replace(main, table=f"{main.table}_db{n}") for n in range(1, DATABASES)]
        for dialect in made:
            await self.backend.create(dialect)
        readers = self._readers[0].concurrency
        self._readers += [GroupRead(self.backend, dialect=d, concurrency=readers) for d in made]
        self._dialects += made

    def dialect(self, db: int) -> Any:
        """Database `db`'s statements (after `databases()` for any but 0)."""
        return self._dialects[db]

    def dialects(self) -> list[Any]:
        """The tables there are: database 0's, and 1 to 15's once created."""
        return list(self._dialects)

    def _failed(self, exc: Exception) -> BackendUnavailable:
        """The driver's or the pool's error, as the named one a user can catch. (Plain
        `try` blocks around the calls: they cost nothing while nothing fails.)"""
        return BackendUnavailable(f"{self.backend.name} failed: {type(exc).__name__}: {exc}")

    def _d(self) -> Any:
        return self.backend.dialect

    async def get(self, key: Key) -> bytes | None:
        """The value, or None if the key does not exist or has expired."""
        raw = as_key(key)
        return await self.find(ops.Lookup((raw,), ops.value_of(raw)))

    async def get_with_ttl(self, key: Key) -> tuple[bytes, int] | None:
        """The value and its seconds to live (as `ttl`: -1 for no expiry), read together:
        two reads would let a write in between pair one value with another's TTL. None if
        the key does not exist or has expired."""
        found = await self.read(ops.get_with_pttl(self._d(), now_ms(), as_key(key)))
        if found is None:
            return None
        value, left = found
        return value, seconds_left(left)

    async def mget(self, keys: Iterable[Key]) -> list[bytes | None]:
        """The values of several keys, None for each missing one."""
        raw = tuple(as_key(k) for k in keys)
        return await self.find(ops.Lookup(raw, ops.values_of(raw)))

    async def exists(self, *keys: Key) -> int:
        """How many of the keys exist (a key given twice counts twice)."""
        raw = tuple(as_key(k) for k in keys)
        return await self.find(ops.Lookup(raw, ops.count_of(raw)))

    async def pttl(self, key: Key) -> int:
        """Milliseconds before the key expires: -1 if it never does, -2 if there is no key."""
        raw = as_key(key)
        return await self.find(ops.Lookup((raw,), ops.pttl_of(raw)))

    async def ttl(self, key: Key) -> int:
        """Seconds before the key expires, rounded as Redis does; -1 never, -2 no key."""
        return seconds_left(await self.pttl(key))

    async def scan(
        self, prefix: Key = b"", *, after: Key | None = None, count: int = 100
    ) -> tuple[list[bytes], bytes | None]:
        """Up to `count` keys that start with `prefix`, in byte order, after the key
        `after`; and the key to pass as `after` next time (None when done)."""
        raw_prefix = prefix.encode() if isinstance(prefix, str) else bytes(prefix)
        raw_after = None if after is None else as_key(after)
        if count < 1:
            raise ValueError("count must be at least 1")
        return await self.read(ops.scan(self._d(), now_ms(), raw_prefix, raw_after, count))

    async def keys(self, prefix: Key = b"", *, count: int = 500) -> AsyncIterator[bytes]:
        """Every key that starts with `prefix`, page by page."""
        after: bytes | None = None
        while True:
            page, after = await self.scan(prefix, after=after, count=count)
            for key in page:
                yield key
            if after is None:
                return

    async def size(self) -> int:
        """How many live keys there are (counts the table: slow on a large one)."""
        return await self.read(ops.count(self._d(), now_ms()))

    # Upkeep

    async def sweep(self) -> int:
        """Remove expired rows now (the sweeper does it every `sweep_interval`)."""
        try:
            return await self._sweeper.sweep()
        except Exception as exc:
            raise self._failed(exc) from exc

    def stats(self) -> dict[str, Any]:
        """Writes and batches so far, transactions run again after a deadlock, rows swept."""
        batching = (
            self._batcher.stats()
            if self._batcher is not None
            else {"writes": self.naive_writes, "batches": self.naive_writes}
        )
        return {
            "backend": self.backend.name,
            "group_commit": self.group_commit,
            **batching,
            **{k: sum(r.stats()[k] for r in self._readers) for k in ("lookups", "reads")},
            "deadlocks_retried": self.backend.deadlocks,
            "swept": self._sweeper.swept,
        }


def seconds_left(left_ms: int) -> int:
    """A PTTL in seconds, rounded as Redis's TTL rounds it (-1 and -2 stay)."""
    return left_ms if left_ms < 0 else (left_ms + 500) // 1000


def _ms(ttl: float) -> int:
    if not isinstance(ttl, int | float) or not ttl > 0 or math.isinf(ttl):
        raise InvalidTTL(f"a time to live is a positive number of seconds, not {ttl!r}")
    return max(1, math.ceil(ttl * 1000))
