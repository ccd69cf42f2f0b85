"""Every kind of id, by name: the one registry the command line and the HTTP service read.

    kind = KINDS["snowflake"]
    source = await kind.open(generators, "default")   # `await source(n)`: n new ids
    kind.decode(value)                                # its time, node and sequence

A kind knows what it needs (a machine id, a MariaDB, a PostgreSQL), how to make its
generator, and how to take one of its ids apart. Local kinds need nothing but this
process: `snowflake` (a machine id given or leased), `simple` (a state file), `ulid` and
`uuid7` (well-kept libraries, for comparison). Server-backed kinds: `central` (a MariaDB
counter table, one counter per service), `instagram` (a PostgreSQL function) and
`ticket` (two MariaDB ticket servers).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

import ulid
import uuid6

from sdlab import sql
from sdlab.ids.central import BatchClient, CounterTable
from sdlab.ids.instagram import install as install_instagram
from sdlab.ids.layout import INSTAGRAM, SNOWFLAKE, InvalidId, Parts
from sdlab.ids.simple import SIMPLE, SimpleGenerator
from sdlab.ids.snowflake import Snowflake
from sdlab.ids.tickets import TicketServers

if TYPE_CHECKING:
    from sdlab.ids.generators import Generators

DATABASE = "sdlab_ids"
"""The database (and the prefix of the schemas) the server-backed kinds use."""

Source = Callable[[int], Awaitable[list[int]]]
"""`await source(n)`: n new ids of one kind, in the order made."""

Opener = Callable[["Generators", str], Awaitable[Source]]
"""`await open(generators, service)`: a kind's source, built from what `generators` holds."""


@dataclass(frozen=True)
class Kind:
    """One kind of id. `needs`: "machine" (a machine id, leased from Redis unless given),
    "mysql", "postgres". `per_service`: one source per service name (a counter each)."""

    name: str
    open: Opener
    needs: frozenset[str] = frozenset()
    decoder: Callable[[int], Parts] | None = None
    node_label: str = "node"
    per_service: bool = False

    @property
    def decodable(self) -> bool:
        return self.decoder is not None

    def decode(self, value: int) -> Parts:
        """The parts of one of this kind's ids; `InvalidId` if it is not one."""
        if self.decoder is None:
            raise InvalidId(
                f"ids of kind {self.name!r} cannot be decoded; kinds: {', '.join(DECODABLE)}"
            )
        try:
            return self.decoder(value)
        except InvalidId:
            raise
        except (ValueError, OverflowError) as exc:  # e.g. a time past the year 9999
            raise InvalidId(f"{value} does not decode as a {self.name} id: {exc}") from None


# -- making ids ------------------------------------------------------------------------


def _local(make: Callable[[], int]) -> Opener:
    async def open_(generators: Generators, service: str) -> Source:
        async def source(count: int) -> list[int]:
            return [make() for _ in range(count)]

        return source

    return open_


async def _snowflake(generators: Generators, service: str) -> Source:
    if generators.machine is not None:  # no lease to keep a horizon: a state file does
        generators.state_dir.mkdir(parents=True, exist_ok=True)
        state = generators.state_dir / f"snowflake-{generators.machine}.horizon"
        made = Snowflake(generators.machine, state=state)
    else:
        made = Snowflake((await generators.lease()).check)

    async def source(count: int) -> list[int]:
        await generators.check_lease()
        return made.next_ids(count)

    return source


async def _simple(generators: Generators, service: str) -> Source:
    machine = await generators.machine_id()
    generators.state_dir.mkdir(parents=True, exist_ok=True)
    made = SimpleGenerator(machine, generators.state_dir / f"simple-{machine}.counter")

    async def source(count: int) -> list[int]:
        await generators.check_lease()
        return made.next_ids(count)

    return source


async def _central(generators: Generators, service: str) -> Source:
    table = await generators.shared("counters", _counters)
    client = BatchClient(lambda n: table.allocate(service, n), batch=generators.batch)
    generators.on_close(client.close)
    return client.next_ids


async def _counters(generators: Generators) -> CounterTable:
    url = await sql.ensure_database(sql.with_database(generators.mysql_url, DATABASE))
    db = await sql.Database(url, min_size=1).open()
    generators.on_close(db.close)
    table = CounterTable(db)
    await table.create()
    return table


async def _instagram(generators: Generators, service: str) -> Source:
    shard = (await generators.machine_id()) % (INSTAGRAM.max_node + 1)
    schema = f"{DATABASE}_shard_{shard}"
    db = await sql.Database(generators.postgres_url, min_size=1).open()
    generators.on_close(db.close)
    async with db.session() as session:
        await install_instagram(session, schema=schema, shard=shard)

    async def source(count: int) -> list[int]:
        return [int(await db.fetchval(f"SELECT {schema}.next_id()")) for _ in range(count)]

    return source


async def _ticket(generators: Generators, service: str) -> Source:
    urls = generators.ticket_urls or [
        sql.with_database(generators.mysql_url, f"{DATABASE}_tickets_{i}") for i in (1, 2)
    ]
    servers = TicketServers(urls)
    await servers.create()
    generators.on_close(servers.close)

    async def source(count: int) -> list[int]:
        return [await servers.next_id() for _ in range(count)]

    return source


# -- taking ids apart ------------------------------------------------------------------


def _decode_ulid(value: int) -> Parts:
    if value < 0 or value >> 128:
        raise InvalidId(f"{value} is not a 128-bit ULID")
    parsed = ulid.ULID.from_int(value)
    return Parts(value, parsed.datetime, 0, value & ((1 << 80) - 1))


def _decode_uuid7(value: int) -> Parts:
    if value < 0 or value >> 128 or (value >> 76) & 0xF != 7:
        raise InvalidId(f"{value} is not a version 7 UUID")
    time = datetime.fromtimestamp((value >> 80) / 1000, UTC)
    return Parts(value, time, 0, value & ((1 << 74) - 1))


def new_ulid() -> int:
    return int(ulid.ULID())


def new_uuid7() -> int:
    return uuid6.uuid7().int


MACHINE = frozenset({"machine"})

KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in [
        Kind("snowflake", _snowflake, MACHINE, SNOWFLAKE.decode, SNOWFLAKE.node_label),
        Kind("simple", _simple, MACHINE, SIMPLE.decode, SIMPLE.node_label),
        Kind("ulid", _local(new_ulid), decoder=_decode_ulid),
        Kind("uuid7", _local(new_uuid7), decoder=_decode_uuid7),
        Kind("central", _central, frozenset({"mysql"}), per_service=True),
        Kind(
            "instagram",
            _instagram,
            frozenset({"machine", "postgres"}),
            INSTAGRAM.decode,
            INSTAGRAM.node_label,
        ),
        Kind("ticket", _ticket, frozenset({"mysql"})),
    ]
}
DECODABLE = [name for name, kind in KINDS.items() if kind.decodable]

# For Typer and FastAPI, which offer an Enum's members as the choices.
KindName = StrEnum("KindName", [(k, k) for k in KINDS])  # type: ignore[misc]  # members come from KINDS; mypy wants literals
DecodableName = StrEnum("DecodableName", [(k, k) for k in DECODABLE])  # type: ignore[misc]  # members come from DECODABLE; mypy wants literals
DECODE_DEFAULT = DecodableName("snowflake")


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
    if kind not in KINDS:
        raise InvalidId(f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
    return KINDS[kind].decode(value)
