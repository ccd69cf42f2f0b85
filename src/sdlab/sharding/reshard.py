"""Online resharding: move users to a new set of shards (or a new router) while they
are written, losing and duplicating nothing.

    report = await reshard(users, new_shard_urls, router="ring")
    report.rows_copied, report.cutover_ms

With the current map at version v, in order:

1. **Prepare.** New shards get their tables and an epoch row at v+2: they refuse every
   write until the cutover.
2. **Start the move.** Publish map v+1: the same router and shards, plus the next ones.
   Fence the current shards at v+1, so writes routed by v (which do not log) have
   ended and no more can start. From now on each write also notes its key in its
   shard's change log (`shard_changes`), in its own transaction.
3. **Copy.** Read every shard in id order; each row whose new home is another shard is
   upserted there, invisible until v+2 (`epoch_in`), and marked on its source as
   visible only before v+2 (`epoch_out`).
4. **Catch up.** Take the logged keys, read each one's current row on its source, and
   upsert it on its new home (or delete it there if it is gone); a logged key is
   removed from the log only after it is copied. Repeat until the log is short.
5. **Cut over.** Fence the current shards at v+2 (writes now wait, refused, for the new
   map), drain what is left of the log, publish map v+2. Writers pause only for this
   step, whose length is `cutover_ms`.
6. **Clean up.** Delete the rows marked as gone from their old shards, and the log.

Everything a write acknowledged before the cutover is in the log or was read by the
copy after it committed; everything after is on its new shard. A row is visible on
exactly one shard at every version, so readers never see it twice or not at all. One
mover at a time: publishing a version that exists fails (`sql.DuplicateKey`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sdlab import sql
from sdlab.sharding.repository import COLUMNS, VISIBLE, ShardedUsers, prepare
from sdlab.sharding.routers import make_router
from sdlab.sharding.shardmap import ShardingError, ShardMap, fence

BATCH = 500


@dataclass(frozen=True)
class MoveReport:
    """What a move did."""

    from_map: ShardMap
    to_map: ShardMap
    rows_copied: int
    changes_replayed: int
    cutover_ms: float
    rows_removed: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": f"{self.from_map.router} over {len(self.from_map.shards)} shards "
            f"(version {self.from_map.version})",
            "to": f"{self.to_map.router} over {len(self.to_map.shards)} shards "
            f"(version {self.to_map.version})",
            "rows copied": self.rows_copied,
            "changes replayed": self.changes_replayed,
            "cutover (ms)": round(self.cutover_ms, 2),
            "rows removed from old shards": self.rows_removed,
            "seconds": round(self.seconds, 3),
        }


async def reshard(
    users: ShardedUsers, shards: Sequence[str], router: str | None = None, *, short_log: int = 50
) -> MoveReport:
    """Move every user onto `shards` routed by `router` (default: the current one)."""
    started = time.perf_counter()
    current = await users.reload()
    if current.moving:
        raise ShardingError(
            f"map version {current.version} is already moving to {current.next_router} "
            f"over {len(current.next_shards or ())} shards"
        )
    router = router or current.router
    make_router(router, len(shards))
    if len(set(shards)) != len(shards):
        raise ValueError("a shard is named twice")
    v = current.version
    for url in shards:
        if url not in current.shards:
            await _prepare_new(users, url, v + 2)

    moving = current.moving_to(v + 1, router, tuple(shards))
    await users.catalog.publish(moving)
    for url in current.shards:
        await fence(await users.shard(url), v + 1)
    users.map = moving

    copier = _Copier(users, moving)
    for index in range(len(moving.shards)):
        await copier.copy(index)
    while await copier.catch_up() >= short_log:
        pass

    cut = time.perf_counter()
    for url in current.shards:
        await fence(await users.shard(url), v + 2)
    while await copier.catch_up():
        pass
    moved = await users.catalog.publish(moving.moved(v + 2))
    cutover_ms = (time.perf_counter() - cut) * 1000
    users.map = moved

    removed = 0
    for url in current.shards:
        db = await users.shard(url)
        removed += await db.execute(
            "DELETE FROM users WHERE epoch_out IS NOT NULL AND epoch_out <= %s", (v + 2,)
        )
        await db.execute("DELETE FROM shard_changes")
    return MoveReport(
        current,
        moved,
        copier.copied,
        copier.replayed,
        cutover_ms,
        removed,
        time.perf_counter() - started,
    )


async def _prepare_new(users: ShardedUsers, url: str, version: int) -> None:
    """A shard joining the map: tables, an epoch refusing writes until `version`, and
    no rows (a database left over from something else would be merged in)."""
    await prepare(url, version)
    db = await users.shard(url)
    await fence(db, version)
    if await db.fetchval("SELECT COUNT(*) FROM users"):
        raise ShardingError(f"{sql.redact(url)} already holds users; give an empty database")


class _Copier:
    """Copies rows from the current shards to their homes in the next map."""

    def __init__(self, users: ShardedUsers, moving: ShardMap) -> None:
        self.users = users
        self.moving = moving
        self.next = moving.next_route()
        self.next_shards = moving.next_shards or ()
        self.version = moving.version  # v+1; copies become visible at v+2
        self.copied = 0
        self.replayed = 0

    def home(self, user_id: int) -> str:
        return self.next_shards[self.next.shard_for(user_id)]

    async def copy(self, index: int) -> None:
        """Every row of one current shard whose home changes, in id batches."""
        source_url = self.moving.shards[index]
        source = await self.users.shard(source_url)
        v, last = self.version, -(2**63)
        while True:
            rows = await source.fetch(
                f"SELECT {COLUMNS} FROM users WHERE id > %s AND {VISIBLE} "
                f"ORDER BY id LIMIT {BATCH}",
                (last, v, v),
            )
            if not rows:
                return
            last = rows[-1][0]
            leaving = [row for row in rows if self.home(row[0]) != source_url]
            await self._put(leaving)
            await _mark_leaving(source, [row[0] for row in leaving], v + 1)
            self.copied += len(leaving)

    async def _put(self, rows: Sequence[tuple[Any, ...]]) -> None:
        by_home: dict[str, list[tuple[Any, ...]]] = {}
        for row in rows:
            by_home.setdefault(self.home(row[0]), []).append(row)
        for url, group in by_home.items():
            target = await self.users.shard(url)
            columns = ["id", "name", "email", "epoch_in", "epoch_out"]
            statement = target.dialect.upsert("users", columns, key=["id"], rows=len(group))
            await target.execute(
                statement, [x for r in group for x in (r[0], r[1], r[2], self.version + 1, None)]
            )

    async def catch_up(self) -> int:
        """One batch from each current shard's change log; the number of keys replayed
        (a log that grows as fast as it is read still lets the caller decide)."""
        done = 0
        for source_url in self.moving.shards:
            source = await self.users.shard(source_url)
            entries = await source.fetch(
                f"SELECT id, user_id FROM shard_changes ORDER BY id LIMIT {BATCH}"
            )
            if not entries:
                continue
            keys = sorted({user_id for _, user_id in entries})
            marks = source.dialect.marks(len(keys))
            v = self.version
            rows = await source.fetch(
                f"SELECT {COLUMNS} FROM users WHERE id IN ({marks}) AND {VISIBLE}",
                (*keys, v, v),
            )
            present = {row[0] for row in rows}
            leaving = [row for row in rows if self.home(row[0]) != source_url]
            await self._put(leaving)
            await _mark_leaving(source, [row[0] for row in leaving], v + 1)
            for key in keys:
                home = self.home(key)
                if key not in present and home != source_url:
                    target = await self.users.shard(home)
                    await target.execute("DELETE FROM users WHERE id = %s", (key,))
            ids = [entry_id for entry_id, _ in entries]
            await source.execute(
                f"DELETE FROM shard_changes WHERE id IN ({source.dialect.marks(len(ids))})", ids
            )
            done += len(keys)
            self.replayed += len(keys)
        return done


async def _mark_leaving(source: sql.Database, ids: Sequence[int], version: int) -> None:
    if ids:
        await source.execute(
            f"UPDATE users SET epoch_out = %s WHERE id IN ({source.dialect.marks(len(ids))})",
            (version, *ids),
        )
