"""Online resharding under writes, and a stale map refused and routed again."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from sdlab import sql
from sdlab.sharding.repository import ShardedUsers, UserNotFound
from sdlab.sharding.reshard import reshard
from sdlab.sharding.shardmap import ShardMap, StaleMap, accept
from tests.sharding.conftest import OpenUsers

Record = dict[int, tuple[str, str] | None]  # id -> acknowledged (name, email), None: deleted


async def where_are(urls: list[str]) -> dict[int, list[tuple[str, str, str]]]:
    """Every row on every shard server, raw (visible or not): id -> [(url, name, email)]."""
    found: dict[int, list[tuple[str, str, str]]] = {}
    for url in urls:
        async with sql.Database(url, max_size=1) as db:
            for user_id, name, email in await db.fetch("SELECT id, name, email FROM users"):
                found.setdefault(int(user_id), []).append((url, name, email))
    return found


async def write_until(
    users: ShardedUsers, stop: asyncio.Event, seed: int, record: Record, latencies: list[float]
) -> None:
    """Insert, rename and delete, one at a time, recording what was acknowledged."""
    rng = random.Random(seed)
    mine: list[int] = []
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started = loop.time()
        roll = rng.random()
        if roll < 0.5 or not mine:
            user = await users.insert(f"w{seed}-{len(mine)}", f"{seed}@x")
            mine.append(user.id)
            record[user.id] = (user.name, user.email)
        elif roll < 0.8:
            key = rng.choice(mine)
            user = await users.update(key, name=f"renamed-{rng.randrange(10**6)}")
            record[key] = (user.name, user.email)
        else:
            key = mine.pop(rng.randrange(len(mine)))
            await users.delete(key)
            record[key] = None
        latencies.append((loop.time() - started) * 1000)


def check(record: Record, rows: dict[int, list[tuple[str, str, str]]], shard_map: Any) -> None:
    for user_id, value in record.items():
        placed = rows.get(user_id, [])
        if value is None:
            assert placed == [], f"deleted user {user_id} is still on {placed}"
        else:
            home = shard_map.shards[shard_map.shard_for(user_id)]
            assert placed == [(home, *value)], f"user {user_id}: {placed}, expected on {home}"
    assert set(rows) <= set(record), "rows nobody wrote"


@pytest.mark.slow
@pytest.mark.parametrize(("before", "after", "router"), [(2, 3, "ring"), (3, 2, "jump")])
async def test_resharding_under_writes_loses_and_duplicates_nothing(
    open_users: OpenUsers, shard_urls: list[str], before: int, after: int, router: str
) -> None:
    users = await open_users(shards=before, router="modulo", machine=1)
    record: Record = {}
    for i in range(300):
        user = await users.insert(f"seed-{i}", "s@x")
        record[user.id] = (user.name, user.email)
    writers = [await ShardedUsers.open(users.catalog.db.url, machine=10 + i) for i in range(3)]
    stop = asyncio.Event()
    latencies: list[float] = []
    try:
        load = [
            asyncio.create_task(write_until(w, stop, seed, record, latencies))
            for seed, w in enumerate(writers)
        ]
        await asyncio.sleep(0.2)
        report = await reshard(users, shard_urls[:after], router)
        await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*load)
    finally:
        for w in writers:
            await w.close()
    assert report.to_map.version == 3
    assert report.rows_copied > 0
    rerouted = sum(w.rerouted for w in writers)
    print(
        report.as_dict(),
        f"writes {len(latencies)}, rerouted {rerouted}, max write {max(latencies):.1f} ms",
    )
    check(record, await where_are(shard_urls), report.to_map)
    current = await users.reload()
    assert current == report.to_map
    for user_id, value in record.items():  # and the router finds them there
        if value is not None:
            assert (await users.get(user_id)).name == value[0]


async def test_a_stale_map_is_refused_and_routed_again(
    open_users: OpenUsers, shard_urls: list[str]
) -> None:
    mover = await open_users(shards=2, router="modulo", machine=1)
    stale = await open_users(shards=2, machine=2)  # loaded the map before the move
    before = [await stale.insert(f"u{i}", "e") for i in range(40)]
    await reshard(mover, shard_urls[:3], "rendezvous")
    assert stale.map.version == 1

    # a write with the old map, straight to the shard, is refused there
    async with sql.Database(shard_urls[0], max_size=1) as db, db.transaction() as tx:
        with pytest.raises(StaleMap, match="accepts map version 3 or newer, not 1"):
            await accept(tx, "shard-0", 1)

    # through the repository it is routed again by the new map
    after = [await stale.insert(f"v{i}", "e") for i in range(40)]
    assert stale.rerouted == 1
    assert stale.map.version == 3
    rows = await where_are(shard_urls)
    for user in after:
        home = stale.map.shards[stale.map.shard_for(user.id)]
        assert [url for url, *_ in rows[user.id]] == [home]
        assert user.shard == f"shard-{stale.map.shard_for(user.id)}"
    # and the old map's readers notice too: a moved user is found where it went
    stale.map = ShardMap(1, "modulo", tuple(shard_urls[:2]))
    for user in before:
        assert (await stale.get(user.id)).id == user.id
    assert stale.rerouted == 2
    with pytest.raises(UserNotFound):
        await stale.get(1)
