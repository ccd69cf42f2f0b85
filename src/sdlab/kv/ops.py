"""Each operation as a script: a generator that yields SQL statements and is sent their
results, with no I/O of its own. A backend runs a script on its driver (asyncmy,
psycopg, or sqlite3 in a thread), so the rules are written once for three databases.

    def get(d, now, key):
        rows = (yield d.select(key)).rows
        ...
        return value

Writes that must see the row first lock it (`SELECT ... FOR UPDATE`): a live row stays
locked until the transaction ends. A missing row cannot be locked, so creating one is an
insert that does nothing if the key appeared meanwhile, and then the script looks again.
That keeps SET NX, INCR and friends right when several servers share one database, not
only when one batcher serializes them.

`batch()` runs many writes in one transaction (group commit), merging runs of plain SETs
into multi-row upserts. `Transaction` is MULTI ... EXEC: its commands, reads among them,
run in order as one write, after a check that no watched key changed.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sdlab.kv import floats
from sdlab.kv.core import (
    DELETED,
    KVError,
    NoSuchKey,
    StringTooLong,
    add,
    alive,
    parse_int,
    prefix_end,
    ttl_ms,
)
from sdlab.kv.sql import Dialect, Result, Row, Stmt

T = TypeVar("T")
Script = Generator[Stmt, Result, T]

ROWS_PER_STATEMENT = 500
EVERY_KEY = b""  # in `written()`: the write may change any key (no key is empty)
BYTES_PER_STATEMENT = 4 * 1024 * 1024  # well under MariaDB's default max_allowed_packet


class Write(Protocol):
    """A write request, queued for a batch."""

    def script(self, d: Dialect, now: int) -> Script[Any]: ...

    def written(self) -> Iterable[bytes]:
        """The keys it may write (for WATCH)."""
        ...


@dataclass(frozen=True, slots=True)
class Put:
    """SET without conditions, or MSET: runs of these merge into multi-row upserts."""

    rows: tuple[Row, ...]

    def script(self, d: Dialect, now: int) -> Script[bool]:
        yield from put(d, self.rows)
        return True

    def written(self) -> Iterable[bytes]:
        return (row[0] for row in self.rows)


@dataclass(frozen=True, slots=True)
class SetIf:
    """SET with NX, XX, KEEPTTL or GET; True if the value was stored (with `get`: the
    old value, or None, whether stored or not, as SET ... GET answers; GETSET)."""

    key: bytes
    value: bytes
    expires_at: int | None
    nx: bool = False
    xx: bool = False
    keep_ttl: bool = False
    get: bool = False

    def script(self, d: Dialect, now: int) -> Script[bool | bytes | None]:
        while True:
            rows = (yield d.select(self.key, lock=True)).rows
            if rows:
                old_expiry = rows[0][1]
                exists = alive(old_expiry, now)
                old = bytes(rows[0][0]) if exists else None
                if (self.nx and exists) or (self.xx and not exists):
                    return old if self.get else False
                expiry = old_expiry if self.keep_ttl and exists else self.expires_at
                yield d.update(self.key, self.value, expiry)
                return old if self.get else True
            if self.xx:
                return None if self.get else False
            if (yield d.insert_if_absent((self.key, self.value, self.expires_at))).rowcount:
                return None if self.get else True
            # Another transaction created the key meanwhile: look again (and lock it).

    def written(self) -> Iterable[bytes]:
        return (self.key,)


@dataclass(frozen=True, slots=True)
class Incr:
    """INCRBY: the new value; NotAnInteger before anything is written."""

    key: bytes
    by: int

    def script(self, d: Dialect, now: int) -> Script[int]:
        while True:
            rows = (yield d.select(self.key, lock=True)).rows
            if rows and alive(rows[0][1], now):
                value = add(parse_int(bytes(rows[0][0])), self.by)
                yield d.update_value(self.key, b"%d" % value)  # the expiry stays, as in Redis
                return value
            if rows:  # expired, not yet swept: it counts from zero, with no expiry
                yield d.update(self.key, b"%d" % self.by, None)
                return self.by
            if (yield d.insert_if_absent((self.key, b"%d" % self.by, None))).rowcount:
                return self.by

    def written(self) -> Iterable[bytes]:
        return (self.key,)


@dataclass(frozen=True, slots=True)
class Delete:
    """DEL: how many of the keys were alive."""

    keys: tuple[bytes, ...]

    def script(self, d: Dialect, now: int) -> Script[int]:
        deleted = 0
        for chunk in chunks(sorted(set(self.keys))):  # sorted: locks taken in one order
            deleted += (yield d.delete_alive(chunk, now, DELETED)).rowcount
        return deleted

    def written(self) -> Iterable[bytes]:
        return self.keys


@dataclass(frozen=True, slots=True)
class Expire:
    """EXPIRE/PEXPIRE at an absolute time (a time already past deletes the key); with a
    condition (Redis 7) only if the key has no expiry (NX), has one (XX), or the new one
    is later (GT) or sooner (LT) than it; no expiry counts as infinitely late."""

    key: bytes
    expires_at: int
    nx: bool = False
    xx: bool = False
    gt: bool = False
    lt: bool = False

    def script(self, d: Dialect, now: int) -> Script[bool]:
        rows = (yield d.select(self.key, lock=True)).rows
        if not rows or not alive(rows[0][1], now):
            return False
        current = rows[0][1]
        if (
            (self.nx and current is not None)
            or (self.xx and current is None)
            or (self.gt and (current is None or self.expires_at <= current))
            or (self.lt and current is not None and self.expires_at >= current)
        ):
            return False
        expiry = self.expires_at if self.expires_at > now else DELETED
        yield d.update_expiry(self.key, expiry)
        return True

    def written(self) -> Iterable[bytes]:
        return (self.key,)


@dataclass(frozen=True, slots=True)
class Persist:
    """PERSIST: True if the key had an expiry and now has none."""

    key: bytes

    def script(self, d: Dialect, now: int) -> Script[bool]:
        rows = (yield d.select(self.key, lock=True)).rows
        if not rows or rows[0][1] is None or not alive(rows[0][1], now):
            return False
        yield d.update_expiry(self.key, None)
        return True

    def written(self) -> Iterable[bytes]:
        return (self.key,)


def modify(
    d: Dialect, key: bytes, now: int, change: Callable[[bytes | None], bytes | None]
) -> Script[bytes | None]:
    """Lock the key and write `change(its value)` (None for a missing or expired key):
    a live key keeps its expiry, a new one has none. `change` may answer None (write
    nothing) or raise a KVError (before anything is written). The new value, or None."""
    while True:
        rows = (yield d.select(key, lock=True)).rows
        live = bool(rows) and alive(rows[0][1], now)
        new = change(bytes(rows[0][0]) if live else None)
        if new is None:
            return None
        if live:
            yield d.update_value(key, new)
            return new
        if rows:  # expired, not yet swept
            yield d.update(key, new, None)
            return new
        if (yield d.insert_if_absent((key, new, None))).rowcount:
            return new
        # Another transaction created the key meanwhile: look again (and lock it).


@dataclass(frozen=True, slots=True)
class Append:
    """APPEND: the value's new length (a missing key starts empty)."""

    key: bytes
    value: bytes
    limit: int  # the store's max_value

    def script(self, d: Dialect, now: int) -> Script[int]:
        def appended(old: bytes | None) -> bytes:
            new = (old or b"") + self.value
            if len(new) > self.limit:
                raise StringTooLong
            return new

        return len((yield from modify(d, self.key, now, appended)) or b"")

    def written(self) -> Iterable[bytes]:
        return (self.key,)


@dataclass(frozen=True, slots=True)
class SetRange:
    """SETRANGE: overwrite from `offset` (zero bytes pad a short value); the new length.
    An empty value changes nothing, and creates no key."""

    key: bytes
    offset: int
    value: bytes
    limit: int

    def script(self, d: Dialect, now: int) -> Script[int]:
        def overwritten(old: bytes | None) -> bytes | None:
            if not self.value:
                return None
            if self.offset + len(self.value) > self.limit:
                raise StringTooLong
            start = (old or b"").ljust(self.offset, b"\0")
            return start[: self.offset] + self.value + start[self.offset + len(self.value) :]

        if not self.value:  # nothing to write: the length as it is
            return len((yield from get(d, now, self.key)) or b"")
        return len((yield from modify(d, self.key, now, overwritten)) or b"")

    def written(self) -> Iterable[bytes]:
        return (self.key,)


@dataclass(frozen=True, slots=True)
class IncrByFloat:
    """INCRBYFLOAT: the new value as Redis writes it (`floats.py`); the expiry stays."""

    key: bytes
    by: bytes

    def script(self, d: Dialect, now: int) -> Script[bytes]:
        new = yield from modify(d, self.key, now, lambda old: floats.add(old or b"0", self.by))
        assert new is not None
        return new

    def written(self) -> Iterable[bytes]:
        return (self.key,)


@dataclass(frozen=True, slots=True)
class GetDel:
    """GETDEL: the value, and the key deleted."""

    key: bytes

    def script(self, d: Dialect, now: int) -> Script[bytes | None]:
        rows = (yield d.select(self.key, lock=True)).rows
        if not rows or not alive(rows[0][1], now):
            return None
        yield d.delete_alive([self.key], now, DELETED)
        return bytes(rows[0][0])

    def written(self) -> Iterable[bytes]:
        return (self.key,)


@dataclass(frozen=True, slots=True)
class GetEx:
    """GETEX: the value, and its expiry set (an absolute time; a past one deletes the
    key), removed (`persist`) or, with neither, left alone."""

    key: bytes
    expires_at: int | None = None
    persist: bool = False

    def script(self, d: Dialect, now: int) -> Script[bytes | None]:
        rows = (yield d.select(self.key, lock=True)).rows
        if not rows or not alive(rows[0][1], now):
            return None
        if self.persist:
            if rows[0][1] is not None:
                yield d.update_expiry(self.key, None)
        elif self.expires_at is not None:
            expiry = self.expires_at if self.expires_at > now else DELETED
            yield d.update_expiry(self.key, expiry)
        return bytes(rows[0][0])

    def written(self) -> Iterable[bytes]:
        return (self.key,)


def lock_all(d: Dialect, keys: Iterable[bytes], now: int) -> Script[dict[bytes, Row]]:
    """Lock every key's row, in key order (so two writers cannot deadlock on them), a
    missing one by creating it dead (expired: the same as absent, swept later); the
    live ones' rows."""
    found: dict[bytes, Row] = {}
    for key in sorted(set(keys)):
        while True:
            rows = (yield d.select(key, lock=True)).rows
            if rows:
                if alive(rows[0][1], now):
                    found[key] = (key, bytes(rows[0][0]), rows[0][1])
                break
            if (yield d.insert_if_absent((key, b"", DELETED))).rowcount:
                break
    return found


@dataclass(frozen=True, slots=True)
class MSetNX:
    """MSETNX: every value stored, none of them expiring, if none of the keys exists;
    else nothing. True if stored."""

    rows: tuple[Row, ...]

    def script(self, d: Dialect, now: int) -> Script[bool]:
        if (yield from lock_all(d, (row[0] for row in self.rows), now)):
            return False
        yield from put(d, self.rows)
        return True

    def written(self) -> Iterable[bytes]:
        return (row[0] for row in self.rows)


@dataclass(frozen=True, slots=True)
class Rename:
    """RENAME (and RENAMENX, `nx`): the value and its expiry moved to the new name;
    NoSuchKey if there is none. False if `nx` and the new name exists."""

    source: bytes
    target: bytes
    nx: bool = False

    def script(self, d: Dialect, now: int) -> Script[bool]:
        live = yield from lock_all(d, (self.source, self.target), now)
        if self.source not in live:
            raise NoSuchKey("no such key")
        if self.source == self.target:
            return not self.nx
        if self.nx and self.target in live:
            return False
        _, value, expires_at = live[self.source]
        yield d.upsert([(self.target, value, expires_at)])
        yield d.delete_alive([self.source], now, DELETED)
        return True

    def written(self) -> Iterable[bytes]:
        return (self.source, self.target)


@dataclass(frozen=True, slots=True)
class Flush:
    """FLUSHDB: every live key deleted, a page at a time, in the one transaction."""

    def script(self, d: Dialect, now: int) -> Script[bool]:
        after: bytes | None = None
        while True:
            keys = [bytes(row[0]) for row in (yield d.scan(b"", None, after, now, 500)).rows]
            if keys:
                yield d.delete_alive(keys, now, DELETED)
            if len(keys) < 500:
                return True
            after = keys[-1]

    def written(self) -> Iterable[bytes]:
        return (EVERY_KEY,)


@dataclass(frozen=True, slots=True)
class Read:
    """A read as a step of a transaction: `run(d, now, *args)`, one of the read scripts
    below, run inside the transaction so that it sees the writes before it."""

    run: Callable[..., Script[Any]]
    args: tuple[Any, ...] = ()

    def script(self, d: Dialect, now: int) -> Script[Any]:
        return self.run(d, now, *self.args)

    def written(self) -> Iterable[bytes]:
        return ()


Found = dict[bytes, tuple[bytes, int | None]]  # live keys' rows: key -> (value, expires_at)


@dataclass(frozen=True, slots=True)
class Lookup:
    """A read of some keys' rows, answered from what is found of them (`answer(found,
    now)`): GET, MGET, EXISTS, TTL and the like. Outside a transaction the lookups made
    in one loop turn share one `SELECT ... WHERE k IN (...)` (`batching.GroupRead`);
    inside one it runs as a script of its own, seeing the writes before it."""

    keys: tuple[bytes, ...]
    answer: Callable[[Found, int], Any]

    def script(self, d: Dialect, now: int) -> Script[Any]:
        return self.answer((yield from rows(d, now, self.keys)), now)

    def written(self) -> Iterable[bytes]:
        return ()


def rows(d: Dialect, now: int, keys: Iterable[bytes]) -> Script[Found]:
    """The live rows of these keys, a few hundred keys per statement."""
    found: Found = {}
    for chunk in chunks(sorted(set(keys))):
        for key, value, expires_at in (yield d.select_many(chunk)).rows:
            if alive(expires_at, now):
                found[bytes(key)] = (bytes(value), expires_at)
    return found


def value_of(key: bytes) -> Callable[[Found, int], bytes | None]:
    """GET's answer from a lookup: the value, or None."""

    def answer(found: Found, now: int) -> bytes | None:
        row = found.get(key)
        return None if row is None else row[0]

    return answer


def values_of(keys: Sequence[bytes]) -> Callable[[Found, int], list[bytes | None]]:
    def answer(found: Found, now: int) -> list[bytes | None]:
        return [found[key][0] if key in found else None for key in keys]

    return answer


def count_of(keys: Sequence[bytes]) -> Callable[[Found, int], int]:
    """EXISTS's answer: how many of the keys exist, a key named twice counted twice."""

    def answer(found: Found, now: int) -> int:
        return sum(key in found for key in keys)

    return answer


def pttl_of(key: bytes) -> Callable[[Found, int], int]:
    """PTTL's answer: ms to live; -1 for no expiry, -2 for no key."""

    def answer(found: Found, now: int) -> int:
        row = found.get(key)
        return -2 if row is None else ttl_ms(row[1], now)

    return answer


Step = Write | Read | Lookup
State = tuple[bytes, int | None] | None  # a key's value and expiry if it is alive, or None


def qualified(db: int, key: bytes) -> bytes:
    """A key as WATCH tells databases apart (database 0's keys as they are). Two keys may
    come out the same (`1\\0a` in 0, `a` in 1): then a write to one breaks a WATCH of the
    other, a needless null EXEC, never a missed one."""
    return key if db == 0 else b"%d\0%s" % (db, key)


@dataclass(frozen=True, slots=True)
class In:
    """A step on another database than 0 (SELECT n): its script run on that database's
    table, its keys qualified for WATCH."""

    dialect: Dialect
    db: int
    step: Write | Read | Lookup

    def script(self, d: Dialect, now: int) -> Script[Any]:
        return self.step.script(self.dialect, now)

    def written(self) -> Iterable[bytes]:
        return (k if k == EVERY_KEY else qualified(self.db, k) for k in self.step.written())


@dataclass(frozen=True, slots=True)
class FlushAll:
    """FLUSHALL: every database's table flushed, in one transaction."""

    dialects: tuple[Dialect, ...]

    def script(self, d: Dialect, now: int) -> Script[bool]:
        for dialect in self.dialects:
            yield from Flush().script(dialect, now)
        return True

    def written(self) -> Iterable[bytes]:
        return (EVERY_KEY,)


@dataclass(frozen=True, slots=True)
class Transaction:
    """MULTI ... EXEC: every step in order, in one SQL transaction, so nobody sees half
    of it. First each watched key is read again, locked (`FOR UPDATE`), and compared with
    what WATCH read: if any differs, nothing runs and the result is None (EXEC's null).
    Otherwise a list with each step's result, or the KVError it raised: a step raises
    before it writes anything, so the others apply, as Redis runs the rest of an EXEC."""

    watched: tuple[tuple[Dialect | None, bytes, State], ...] = ()  # None: the main table
    steps: tuple[Step | In, ...] = ()

    def script(self, d: Dialect, now: int) -> Script[list[Any] | None]:
        # Sorted: locks taken in one order.
        for where, key, seen in sorted(self.watched, key=lambda w: (w[0] is not None, w[1])):
            rows = (yield (where or d).select(key, lock=True)).rows
            if state(rows, now) != seen:
                return None
        return (yield from batch(d, self.steps, now))  # as a batch: runs of SETs merge

    def written(self) -> Iterable[bytes]:
        return [key for step in self.steps for key in step.written()]


def state(rows: Sequence[tuple[Any, ...]], now: int) -> State:
    """What WATCH remembers of a key, from `select(key)`'s rows: its value and expiry if
    it is alive. A write, a delete or an expiry changes it (a write of the same value
    and expiry does not: see docs/kv.md)."""
    if not rows or not alive(rows[0][1], now):
        return None
    return bytes(rows[0][0]), rows[0][1]


def states(d: Dialect, now: int, keys: Sequence[bytes]) -> Script[dict[bytes, State]]:
    """WATCH's read: each key's state now."""
    found: dict[bytes, State] = dict.fromkeys(keys)
    for chunk in chunks(sorted(set(keys))):
        for key, value, expires_at in (yield d.select_many(chunk)).rows:
            found[bytes(key)] = state([(value, expires_at)], now)
    return found


def batch(d: Dialect, writes: Sequence[Write | Read | Lookup], now: int) -> Script[list[Any]]:
    """Every write of a batch (or step of a transaction), in order, in the caller's one
    transaction. Each gets its result, or the KVError it raised (a script raises before
    it writes anything)."""
    results: list[Any] = []
    puts: list[Row] = []  # a run of plain SETs, merged into multi-row upserts
    for write in writes:
        if isinstance(write, Put):
            puts += write.rows
            results.append(True)
            continue
        if puts:
            yield from put(d, puts)
            puts = []
        try:
            results.append((yield from write.script(d, now)))
        except KVError as exc:
            results.append(exc)
    if puts:
        yield from put(d, puts)
    return results


def put(d: Dialect, rows: Sequence[Row]) -> Script[None]:
    """Upsert rows, a few hundred per statement. Of rows with the same key the last wins,
    as if they were set one after another (and PostgreSQL refuses a statement that
    upserts one key twice)."""
    rows = list({row[0]: row for row in rows}.values())
    start = 0
    while start < len(rows):
        size, end = 0, start
        while end < len(rows) and end - start < ROWS_PER_STATEMENT:
            size += len(rows[end][0]) + len(rows[end][1])
            end += 1
            if size >= BYTES_PER_STATEMENT:
                break
        yield d.upsert(rows[start:end])
        start = end


# Reads: one statement each, outside any batch.


def get(d: Dialect, now: int, key: bytes) -> Script[bytes | None]:
    found = yield from get_with_pttl(d, now, key)
    return None if found is None else found[0]


def get_with_pttl(d: Dialect, now: int, key: bytes) -> Script[tuple[bytes, int] | None]:
    """The value and its milliseconds to live (-1: no expiry) from one statement, so that
    they belong to the same write; None for no key."""
    rows = (yield d.select(key)).rows
    if not rows or not alive(rows[0][1], now):
        return None
    return bytes(rows[0][0]), ttl_ms(rows[0][1], now)


def mget(d: Dialect, now: int, keys: Sequence[bytes]) -> Script[list[bytes | None]]:
    found = yield from _alive(d, now, keys)
    return [found.get(key) for key in keys]


def exists(d: Dialect, now: int, keys: Sequence[bytes]) -> Script[int]:
    """How many of the keys exist, a key named twice counted twice (as Redis does)."""
    found = yield from _alive(d, now, keys)
    return sum(key in found for key in keys)


def pttl(d: Dialect, now: int, key: bytes) -> Script[int]:
    """Milliseconds to live; -1 for no expiry, -2 for no key."""
    rows = (yield d.select(key)).rows
    if not rows or not alive(rows[0][1], now):
        return -2
    return ttl_ms(rows[0][1], now)


def scan(
    d: Dialect, now: int, prefix: bytes, after: bytes | None, count: int
) -> Script[tuple[list[bytes], bytes | None]]:
    """Up to `count` live keys starting with `prefix`, after `after`, in key order, and
    the key to continue after (None: the scan is complete)."""
    rows = (yield d.scan(prefix, prefix_end(prefix), after, now, count)).rows
    keys = [bytes(row[0]) for row in rows]
    return keys, (keys[-1] if len(keys) == count else None)


def expiry(d: Dialect, now: int, key: bytes) -> Script[int]:
    """PEXPIRETIME: the expiry in ms since the epoch; -1 for none, -2 for no key."""
    rows = (yield d.select(key)).rows
    if not rows or not alive(rows[0][1], now):
        return -2
    return -1 if rows[0][1] is None else int(rows[0][1])


def keys(
    d: Dialect, now: int, prefix: bytes, matches: Callable[[bytes], object]
) -> Script[list[bytes]]:
    """KEYS: every live key with the prefix that `matches`, in key order."""
    found: list[bytes] = []
    after: bytes | None = None
    while True:
        page, after = yield from scan(d, now, prefix, after, ROWS_PER_STATEMENT)
        found += [key for key in page if matches(key)]
        if after is None:
            return found


def random_key(d: Dialect, now: int, start: bytes) -> Script[bytes | None]:
    """RANDOMKEY: the first live key after `start` (a random string), or the first of
    all when none is after it. Not uniform: a key after a wide gap comes up more often."""
    page, _ = yield from scan(d, now, b"", start, 1)
    if not page:
        page, _ = yield from scan(d, now, b"", None, 1)
    return page[0] if page else None


def count(d: Dialect, now: int) -> Script[int]:
    rows = (yield d.count_alive(now)).rows
    return int(rows[0][0])


def nothing(d: Dialect, now: int) -> Script[None]:
    """A read with nothing to read (SCAN TYPE hash: there are only strings)."""
    return
    yield  # (a generator, as every script is)


def sweep(d: Dialect, now: int, limit: int) -> Script[int]:
    return (yield d.sweep(now, limit)).rowcount


def _alive(d: Dialect, now: int, keys: Sequence[bytes]) -> Script[dict[bytes, bytes]]:
    found: dict[bytes, bytes] = {}
    for chunk in chunks(sorted(set(keys))):
        for key, value, expires_at in (yield d.select_many(chunk)).rows:
            if alive(expires_at, now):
                found[bytes(key)] = bytes(value)
    return found


def chunks(items: Sequence[T], size: int = ROWS_PER_STATEMENT) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
