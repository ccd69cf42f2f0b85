"""Every kind of id, by name: the one registry the command line and the HTTP service read.

    kind = KINDS["ulid"]
    source = await kind.open(generators, "default")   # `await source(n)`: n new ids (ints)
    kind.text(value)                                  # '01M8XQGYTJZJA6ZX8HK67E41B7'
    kind.read("01M8XQGYTJZJA6ZX8HK67E41B7")           # its time, node and sequence

A kind knows what it needs (a machine id, a MariaDB, a PostgreSQL), how to make its
generator, how its ids are written (`text.py`: decimal, ULID or UUID text; the integer
is always accepted back) and how to take one apart, refusing a value that cannot be one
of its ids (a snowflake id read as a ULID would say 1970). Local kinds need nothing but this
process: `snowflake` (a machine id given or leased), `simple` (a state file), `ulid` and
`uuid7` (well-kept libraries, for comparison). Server-backed kinds: `central` (a MariaDB
counter table, one counter per service), `instagram` (a PostgreSQL function) and
`ticket` (two MariaDB ticket servers).
"""

from __future__ import annotations

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
from sdlab.ids.text import DECIMAL, ULID, UUID, Form, form_of
from sdlab.ids.tickets import TicketServers

if TYPE_CHECKING:
    from sdlab.ids.generators import Generators

DATABASE = "sdlab_ids"
"""The database (and the prefix of the schemas) the server-backed kinds use."""

Source = Callable[[int], Awaitable[list[int]]]
"""`await source(n)`: n new ids of one kind, in the order made."""

Opener = Callable[["Generators", str], Awaitable[Source]]
"""`await open(generators, service)`: a kind's source, built from what `generators` holds."""


MAX_TEXT = 45
"""Longer text is no id: 2**128 has 39 digits, a UUID 36 characters."""


@dataclass(frozen=True)
class Kind:
    """One kind of id. `needs`: "machine" (a machine id, leased from Redis unless given),
    "mysql", "postgres". `per_service`: one source per service name (a counter each).
    `form`: how its ids are written. `earliest`: no id of this kind carries an earlier
    time (the scheme did not exist), so a value that would is refused."""

    name: str
    open: Opener
    needs: frozenset[str] = frozenset()
    decoder: Callable[[int], Parts] | None = None
    node_label: str = "node"
    per_service: bool = False
    form: Form = DECIMAL
    earliest: datetime | None = None

    @property
    def decodable(self) -> bool:
        return self.decoder is not None

    def text(self, value: int) -> str:
        """One id in this kind's canonical text."""
        return self.form.write(value)

    def texts(self, values: list[int]) -> list[str]:
        """Ids in this kind's canonical text, in the same order."""
        return self.form.write_all(values)

    def parse(self, text: str) -> int:
        """An id of this kind as typed: its canonical text, or the integer in decimal.
        `InvalidId` for text of another form (UUID text is no snowflake id)."""
        text = text.strip()
        if len(text) > MAX_TEXT:
            raise InvalidId(f"{text[:20]}... is too long to be an id")
        for form in (DECIMAL, self.form):
            try:
                return form.read(text)
            except ValueError:
                pass
        written = "in decimal"
        if self.form is not DECIMAL:
            written = f"as {self.form.name} text or {written}"
        how = f"{_a(self.name)} {self.name} id is written {written}, like {self.form.example}"
        other = form_of(text)
        if other is None:
            raise InvalidId(f"{text!r} is not an id: {how}")
        readers = [kind.name for kind in KINDS.values() if kind.form is other]
        hint = " or ".join(f"--kind {name}" for name in readers)
        raise InvalidId(
            f"{text!r} is {other.name} text, as {' or '.join(readers)} ids are ({hint}); {how}"
        )

    def decode(self, value: int) -> Parts:
        """The parts of one of this kind's ids; `InvalidId` if it cannot be one."""
        if self.decoder is None:
            raise InvalidId(
                f"ids of kind {self.name!r} cannot be decoded; kinds: {', '.join(DECODABLE)}"
            )
        try:
            parts = self.decoder(value)
        except InvalidId:
            raise
        except (ValueError, OverflowError) as exc:  # e.g. a time past the year 9999
            raise InvalidId(
                f"{value} does not decode as {_a(self.name)} {self.name} id: {exc}"
            ) from None
        if self.earliest is not None and parts.time < self.earliest:
            raise InvalidId(
                f"{value} is not {_a(self.name)} {self.name} id: it would date from "
                f"{parts.time.isoformat(timespec='milliseconds')}, before the {self.name} "
                f"scheme existed ({self.earliest.year})"
            )
        return parts

    def read(self, text: str) -> Parts:
        """The parts of an id of this kind as typed (`parse`, then `decode`)."""
        return self.decode(self.parse(text))

    def describe(self, parts: Parts) -> dict[str, object]:
        """What `sdlab ids decode` and `GET /decode` show: the id in its text (and the
        integer, where that is not the text), its time, node and sequence."""
        fields: dict[str, object] = {"kind": self.name, "id": self.text(parts.id)}
        if self.form is not DECIMAL:
            fields["int"] = str(parts.id)
        layout = parts.as_dict(self.node_label)
        del layout["id"]
        return {**fields, **layout}


def _a(name: str) -> str:
    return "an" if name.startswith(("a", "e", "i", "o")) else "a"  # "a ulid", "an instagram"


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
    if value < 0 or value >> 128 or (value >> 76) & 0xF != 7 or (value >> 62) & 0b11 != 0b10:
        raise InvalidId(f"{value} is not a version 7 UUID (RFC 9562 variant)")
    time = datetime.fromtimestamp((value >> 80) / 1000, UTC)
    return Parts(value, time, 0, value & ((1 << 74) - 1))


def new_ulid() -> int:
    """A new ULID as its 128-bit integer (`ULID.write` gives its text)."""
    return int(ulid.ULID())


def new_uuid7() -> int:
    """A new UUIDv7 as its 128-bit integer (`UUID.write` gives its text)."""
    return uuid6.uuid7().int


MACHINE = frozenset({"machine"})
# When each 1970-epoch scheme appeared: the ULID spec in 2016, the first UUIDv7 draft in
# 2020, and the seed's simple generator no earlier (it was measured on an M1 laptop).
SINCE_ULID = datetime(2016, 1, 1, tzinfo=UTC)
SINCE_UUID7 = datetime(2020, 1, 1, tzinfo=UTC)
SINCE_SIMPLE = datetime(2020, 1, 1, tzinfo=UTC)

KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in [
        Kind("snowflake", _snowflake, MACHINE, SNOWFLAKE.decode, SNOWFLAKE.node_label),
        Kind("simple", _simple, MACHINE, SIMPLE.decode, SIMPLE.node_label, earliest=SINCE_SIMPLE),
        Kind("ulid", _local(new_ulid), decoder=_decode_ulid, form=ULID, earliest=SINCE_ULID),
        Kind("uuid7", _local(new_uuid7), decoder=_decode_uuid7, form=UUID, earliest=SINCE_UUID7),
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


def decode(kind: str, value: int) -> Parts:
    """The parts of a `kind` id (snowflake, instagram, simple, ulid or uuid7)."""
    if kind not in KINDS:
        raise InvalidId(f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
    return KINDS[kind].decode(value)


def text(kind: str, value: int) -> str:
    """A `kind` id in its canonical text: decimal, or ULID or UUID text."""
    if kind not in KINDS:
        raise InvalidId(f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
    return KINDS[kind].text(value)
