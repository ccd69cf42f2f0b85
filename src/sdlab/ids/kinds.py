"""Every kind of id by name, for the command line and the HTTP service.

Local kinds need nothing but this process: `snowflake` (a machine id given or leased),
`simple` (a state file), `ulid` and `uuid7` (well-kept libraries, for comparison).
Server-backed kinds: `central` (a MariaDB counter table), `instagram` (a PostgreSQL
function) and `ticket` (two MariaDB ticket servers).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import ulid
import uuid6

from sdlab.ids.layout import INSTAGRAM, SNOWFLAKE, InvalidId, Layout, Parts
from sdlab.ids.simple import SIMPLE

LOCAL = ("snowflake", "simple", "ulid", "uuid7")
SERVER = ("central", "instagram", "ticket")
DECODABLE: dict[str, Layout] = {"snowflake": SNOWFLAKE, "instagram": INSTAGRAM, "simple": SIMPLE}


def new_ulid() -> int:
    return int(ulid.ULID())


def new_uuid7() -> int:
    return uuid6.uuid7().int


def parse(text: str) -> int:
    """An id as typed: decimal, or a UUID / 32 hex digits, or a 26-character ULID."""
    text = text.strip()
    if len(text) > 45:  # 2**128 has 39 digits; a UUID is 36 characters
        raise InvalidId(f"{text[:20]}... is too long to be an id")
    if text.isdecimal():
        return int(text)
    try:
        return uuid.UUID(text).int
    except ValueError:
        pass
    try:
        return int(ulid.ULID.from_str(text))
    except ValueError:
        raise InvalidId(f"{text!r} is not a decimal id, a UUID or a ULID") from None


def decode(kind: str, value: int) -> Parts:
    """The parts of a `kind` id (snowflake, instagram, simple, ulid or uuid7)."""
    try:
        return _decode(kind, value)
    except (ValueError, OverflowError) as exc:  # e.g. a time past the year 9999
        if isinstance(exc, InvalidId):
            raise
        raise InvalidId(f"{value} does not decode as a {kind} id: {exc}") from None


def _decode(kind: str, value: int) -> Parts:
    if kind in DECODABLE:
        return DECODABLE[kind].decode(value)
    if kind == "ulid":
        if value < 0 or value >> 128:
            raise InvalidId(f"{value} is not a 128-bit ULID")
        parsed = ulid.ULID.from_int(value)
        return Parts(value, parsed.datetime, 0, value & ((1 << 80) - 1))
    if kind == "uuid7":
        if value < 0 or value >> 128 or (value >> 76) & 0xF != 7:
            raise InvalidId(f"{value} is not a version 7 UUID")
        time = datetime.fromtimestamp((value >> 80) / 1000, UTC)
        return Parts(value, time, 0, value & ((1 << 74) - 1))
    raise InvalidId(
        f"ids of kind {kind!r} cannot be decoded; kinds: {', '.join(DECODABLE)}, ulid, uuid7"
    )
