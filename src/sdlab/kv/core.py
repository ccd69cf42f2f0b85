"""The store's rules, with no I/O: what a key and a value may be, when a key has expired,
what counts as an integer, and the errors a user can meet.

Time is milliseconds since the Unix epoch, read from this process's clock (not the
database's), so that every backend agrees on "now". A key's `expires_at` is NULL for a key
that never expires, and a time in the past for a key that is gone: deleting a key is
setting its expiry to -1, as the seed did, and the sweeper removes the row later.
"""

from __future__ import annotations

import time

MAX_KEY_BYTES = 1024
"""Longer keys are refused: every index can hold one (InnoDB's limit is 3072 bytes)."""

DEFAULT_MAX_VALUE = 1024 * 1024
"""The default limit on a value: 1 MiB (a server can be given another)."""

DELETED = -1
"""The expiry a deleted key is given: in the past for every clock."""

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class KVError(Exception):
    """Base class of the errors a user of the store can meet."""


class InvalidKey(KVError, ValueError):
    """A key that is empty or longer than MAX_KEY_BYTES."""


class ValueTooLarge(KVError, ValueError):
    """A value longer than the store's `max_value`."""


class InvalidTTL(KVError, ValueError):
    """A time to live that is not a positive number of seconds, or an expiry so far off
    that it does not fit in 64 bits of milliseconds."""


class NotAnInteger(KVError, ValueError):
    """INCR on a value that is not a 64-bit decimal integer, or that would overflow."""


class NotAFloat(KVError, ValueError):
    """INCRBYFLOAT on a value (or by an increment) that is not a number, or whose result
    would be infinite."""


class NoSuchKey(KVError):
    """RENAME of a key that does not exist."""


class StringTooLong(KVError, ValueError):
    """APPEND or SETRANGE would make a value longer than the store's `max_value`."""

    def __init__(self) -> None:
        super().__init__("string exceeds maximum allowed size (proto-max-bulk-len)")


class StoreClosed(KVError):
    """The store is closed (or was closed while the request waited)."""


Key = str | bytes
Value = str | bytes | int


def as_key(key: Key) -> bytes:
    """The key as bytes (text is UTF-8), or InvalidKey."""
    raw = key.encode() if isinstance(key, str) else bytes(key)
    if not raw:
        raise InvalidKey("a key cannot be empty")
    if len(raw) > MAX_KEY_BYTES:
        raise InvalidKey(f"a key is at most {MAX_KEY_BYTES} bytes, this one is {len(raw)}")
    return raw


def as_value(value: Value, limit: int) -> bytes:
    """The value as bytes (text is UTF-8, integers in decimal), or ValueTooLarge."""
    if isinstance(value, int):
        raw = str(value).encode()
    elif isinstance(value, str):
        raw = value.encode()
    else:
        raw = bytes(value)
    if len(raw) > limit:
        raise ValueTooLarge(f"a value is at most {limit} bytes, this one is {len(raw)}")
    return raw


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def alive(expires_at: int | None, now: int) -> bool:
    """Lazy expiry: a row whose time has come is treated as absent, swept or not."""
    return expires_at is None or expires_at > now


def expiry_after(ttl_ms: int, now: int) -> int:
    """The time `ttl_ms` after `now`, or InvalidTTL if it (or the TTL) does not fit in the
    64-bit column: refused up front, as Redis does, and not by the database in the middle
    of a batch of other clients' writes."""
    when = now + ttl_ms
    if not (INT64_MIN <= ttl_ms <= INT64_MAX and INT64_MIN <= when <= INT64_MAX):
        raise InvalidTTL("that time to live is too long: an expiry is a 64-bit number of ms")
    return when


def ttl_ms(expires_at: int | None, now: int) -> int:
    """Redis's PTTL: -1 for a key without expiry (the caller answers -2 for no key)."""
    return -1 if expires_at is None else max(expires_at - now, 0)


def parse_int(raw: bytes) -> int:
    """A value as Redis reads an integer: decimal, optional '-', no spaces, no '+', no
    leading zeros, within 64 bits."""
    text = raw.decode("ascii", errors="replace")
    body = text[1:] if text.startswith("-") else text
    if (
        not body
        or not body.isdigit()
        or not body.isascii()
        or (len(body) > 1 and body[0] == "0")
        or text == "-0"
        or len(body) > 19  # past 64 bits, and int() refuses over 4,300 digits
    ):
        raise NotAnInteger("value is not an integer or out of range")
    number = int(text)
    if not INT64_MIN <= number <= INT64_MAX:
        raise NotAnInteger("value is not an integer or out of range")
    return number


def add(current: int, by: int) -> int:
    total = current + by
    if not INT64_MIN <= total <= INT64_MAX:
        raise NotAnInteger("increment or decrement would overflow")
    return total


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string starting with `prefix` (None if
    there is none: the prefix is empty or all 0xff), for a range scan on the primary key."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])
