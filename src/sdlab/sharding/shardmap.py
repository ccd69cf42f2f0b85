"""The shard map: which router, which shards, which version; and how shards fence it.

    catalog = Catalog(sql.Database(catalog_url))
    await catalog.ensure()
    current = await catalog.current()          # ShardMap(version=3, router="ring", ...)

The map lives in a small table of a catalog database (`shard_maps`, one row per
version, never updated: the current map is the highest version). Every router process
loads it at start and again whenever a shard refuses it.

**How a shard refuses a stale map.** Each shard holds the oldest map version it still
accepts in a one-row table, `shard_epoch`. A write reads that row `FOR SHARE` inside its
own transaction (`accept`) and is refused with `StaleMap` if its map is older; a read
gets the row in the same statement as its rows. Resharding moves the row forward
(`fence`): the UPDATE waits for the writes holding the share lock to commit and holds
new ones back until it commits, so after `fence(v)` returns, no write routed by a map
older than v can commit on that shard. A map is published only after every shard it
replaces has been fenced, so two processes with different maps never both write one key
to two places: the older one's writes are refused, it reloads the map, and routes again.

A map in the middle of a move (`moving`) names the next router and shards too:
writes go by the current ones, and also note the key in the shard's change log so the
mover can copy it again (`sharding.reshard`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from sdlab import sql
from sdlab.sharding.routers import Router, make_router

MAPS_DDL = [
    "CREATE TABLE IF NOT EXISTS shard_maps ("
    " version BIGINT PRIMARY KEY,"
    " router VARCHAR(32) NOT NULL,"
    " shards TEXT NOT NULL,"
    " next_router VARCHAR(32) NULL,"
    " next_shards TEXT NULL)"
]
EPOCH_DDL = ["CREATE TABLE IF NOT EXISTS shard_epoch (id INT PRIMARY KEY, version BIGINT NOT NULL)"]


class ShardingError(Exception):
    """Base of the errors sdlab.sharding raises."""


class StaleMap(ShardingError):
    """A shard refused a map older than the one it accepts."""

    def __init__(self, shard: str, used: int, accepted: int) -> None:
        super().__init__(f"{shard} accepts map version {accepted} or newer, not {used}")
        self.shard, self.used, self.accepted = shard, used, accepted


class NoMap(ShardingError):
    """The catalog holds no shard map yet."""


@dataclass(frozen=True)
class ShardMap:
    """One version of the map. Shards are database URLs; shard i is called `shard-i`."""

    version: int
    router: str
    shards: tuple[str, ...]
    next_router: str | None = None
    next_shards: tuple[str, ...] | None = None
    _routers: dict[str, Router] = field(default_factory=dict, compare=False, repr=False)

    @property
    def moving(self) -> bool:
        """A move is under way: writes also go to the change log."""
        return self.next_shards is not None

    def route(self) -> Router:
        if "now" not in self._routers:
            self._routers["now"] = make_router(self.router, len(self.shards))
        return self._routers["now"]

    def next_route(self) -> Router:
        if self.next_shards is None or self.next_router is None:
            raise ValueError(f"map version {self.version} is not moving")
        if "next" not in self._routers:
            self._routers["next"] = make_router(self.next_router, len(self.next_shards))
        return self._routers["next"]

    def shard_for(self, key: int) -> int:
        return self.route().shard_for(key)

    def moving_to(self, version: int, router: str, shards: tuple[str, ...]) -> ShardMap:
        """The map during a move to `router` over `shards` (version `version`)."""
        return ShardMap(version, self.router, self.shards, router, tuple(shards))

    def moved(self, version: int) -> ShardMap:
        """The map after the move: the next router and shards, no longer moving."""
        if self.next_router is None or self.next_shards is None:
            raise ValueError(f"map version {self.version} is not moving")
        return ShardMap(version, self.next_router, self.next_shards)


def shard_name(index: int) -> str:
    return f"shard-{index}"


class Catalog:
    """The table of shard maps in the catalog database."""

    def __init__(self, db: sql.Database) -> None:
        self.db = db

    async def ensure(self) -> None:
        await sql.ensure_schema(self.db, MAPS_DDL, lock="sdlab_shard_maps")

    async def current(self) -> ShardMap:
        """The newest map; `NoMap` if there is none."""
        row = await self.db.fetchone(
            "SELECT version, router, shards, next_router, next_shards FROM shard_maps "
            "ORDER BY version DESC LIMIT 1"
        )
        if row is None:
            raise NoMap(f"no shard map in {self.db.name}: run `sdlab sharding serve` first")
        version, router, shards, next_router, next_shards = row
        return ShardMap(
            int(version),
            router,
            tuple(json.loads(shards)),
            next_router,
            tuple(json.loads(next_shards)) if next_shards is not None else None,
        )

    async def version(self) -> int:
        return int(await self.db.fetchval("SELECT COALESCE(MAX(version), 0) FROM shard_maps"))

    async def publish(self, shard_map: ShardMap) -> ShardMap:
        """Add `shard_map` as the newest version; `sql.DuplicateKey` if that version is
        taken (another mover got there first)."""
        make_router(shard_map.router, len(shard_map.shards))  # refuse an unknown router
        await self.db.execute(
            "INSERT INTO shard_maps (version, router, shards, next_router, next_shards) "
            "VALUES (%s, %s, %s, %s, %s)",
            (
                shard_map.version,
                shard_map.router,
                json.dumps(list(shard_map.shards)),
                shard_map.next_router,
                json.dumps(list(shard_map.next_shards)) if shard_map.next_shards else None,
            ),
        )
        return shard_map


async def prepare_shard(db: sql.Database | sql.Session, version: int) -> None:
    """Create the epoch row on a shard, accepting `version` and newer (if it has none)."""
    await sql.ensure_schema(db, EPOCH_DDL, lock="sdlab_shard_epoch")
    insert = db.dialect.insert_ignore("shard_epoch", ["id", "version"], key=["id"])
    await db.execute(insert, (1, version))


async def accept(tx: sql.Session, shard: str, version: int) -> None:
    """Inside a write's transaction: refuse it (`StaleMap`) if `version` is too old.
    The share lock holds a concurrent `fence` back until this transaction ends."""
    accepted = await tx.fetchval(
        f"SELECT version FROM shard_epoch WHERE id = 1 {tx.dialect.for_share}"
    )
    if accepted is None:
        raise ShardingError(f"{shard} has no shard_epoch row: it was never prepared")
    if version < int(accepted):
        raise StaleMap(shard, version, int(accepted))


async def fence(db: sql.Database, version: int) -> None:
    """Make the shard refuse maps older than `version`, once the writes under way end."""
    await db.execute(
        "UPDATE shard_epoch SET version = %s WHERE id = 1 AND version < %s", (version, version)
    )
