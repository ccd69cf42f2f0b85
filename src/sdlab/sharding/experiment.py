"""The sharding experiments: what each router costs when shards come and go, and what
the router costs a read.

`sharding` (routing, no database): for each of the five routers, the share of keys
that change shard going from 2 to 3 and from 3 to 4 shards (consistent hashing should
move about 1/N, modulo about (N-1)/N), and the load skew (the fullest shard's keys over
the mean) at 2, 3 and 4 shards. The keys are Snowflake ids made in bulk.

`sharding-reads` (two private MariaDB shard servers): a point read by id through the
router (`ShardedUsers.get`: route, check the map version in the same statement) against
the same read sent straight to the right shard over the same SQL layer, one at a time;
and, over the same two servers, a MariaDB Spider table (a third server whose table's
partitions live on the shards), for the same point reads and a scatter top-100 by
name, beside our merged top-100.

`sharding-move` (three private MariaDB servers): online resharding 2 -> 3 shards and
back while writers keep writing: rows moved, the cutover's length (the writers' pause),
and the writes' latency during the move.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Self

from sdlab import infra, sql
from sdlab.bench import Bench, Chart, Experiment, Headline, Latency, Outcome, Row, register
from sdlab.ids.snowflake import Snowflake
from sdlab.sharding.repository import ShardedUsers, create
from sdlab.sharding.reshard import reshard
from sdlab.sharding.routers import ROUTERS, key_hash, make_router
from sdlab.sharding.spider import Spider, SpiderUnavailable

TARGET_OVERHEAD = 1.2  # issue 17: a read through the router within 1.2x of a direct one


@register
@dataclass
class Routing(Experiment):
    """Keys moved when a shard is added, and load skew, for the five routers (no
    database: the router alone decides both)."""

    name = "sharding"
    system = "sharding"
    title = "Sharding routers: keys moved when a shard joins, and load skew"

    keys: int = 1_000_000

    @classmethod
    def quick(cls) -> Self:
        return cls(keys=200_000)

    async def run(self, bench: Bench) -> Outcome:
        hashes = [key_hash(k) for k in Snowflake(machine=1).next_ids(self.keys)]
        rows = []
        with bench.progress("routing keys", total=len(ROUTERS)) as advance:
            for name in ROUTERS:
                rows.append(await asyncio.to_thread(self._measure, name, hashes))
                advance()
        n = self.keys
        return Outcome(
            rows,
            chart=Chart("router", ["moved 2->3 (%)", "moved 3->4 (%)"], ylabel="% of keys"),
            notes=[
                f"{n:,} Snowflake ids made in one burst (sequences 0..4095 per millisecond); "
                "every router routes on their BLAKE2b hash.",
                "Ideal for a consistent router: 33.3% moved going 2->3, 25% going 3->4; "
                "modulo moves 66.7% and 75%.",
                "range resplits the hash space evenly for the new count (Vitess instead "
                "splits one shard's range, moving only half of that shard).",
                "The seed published no figures for sharding.",
            ],
        )

    @staticmethod
    def _measure(name: str, hashes: list[int]) -> dict[str, Any]:
        placed: dict[int, list[int]] = {}
        started = time.perf_counter()
        for shards in (2, 3, 4):
            route = make_router(name, shards).shard_of_hash
            placed[shards] = [route(h) for h in hashes]
        lookup_us = (time.perf_counter() - started) / (3 * len(hashes)) * 1e6
        row: dict[str, Any] = {"router": name}
        for a, b in ((2, 3), (3, 4)):
            moved = sum(x != y for x, y in zip(placed[a], placed[b], strict=True))
            row[f"moved {a}->{b} (%)"] = 100 * moved / len(hashes)
        for shards in (2, 3, 4):
            counts = [0] * shards
            for shard in placed[shards]:
                counts[shard] += 1
            row[f"skew at {shards} (max/mean)"] = max(counts) / (len(hashes) / shards)
        row["lookup (us)"] = lookup_us
        return row


@register
@dataclass
class Reads(Experiment):
    """A point read through the router against the same read sent straight to its
    shard, and the same reads and a scatter top-100 through a MariaDB Spider table
    over the same two shard servers."""

    name = "sharding-reads"
    system = "sharding"
    title = "Sharding: a read through the router, straight to the shard, through Spider"
    services = ("mysql",)

    users: int = 20_000
    reads: int = 5_000
    scatters: int = 200

    @classmethod
    def quick(cls) -> Self:
        return cls(users=4_000, reads=1_500, scatters=50)

    async def run(self, bench: Bench) -> Outcome:
        servers = await asyncio.to_thread(infra.mariadb, 3)  # two shards and Spider's head
        try:
            shard_urls = [sql.with_database(url, "sdlab_shard") for url in servers.urls[:2]]
            server = bench.endpoint("mysql").url
            async with sql.scratch_database(server, prefix="sdlab_sharding_exp") as catalog:
                return await self._measure(bench, catalog, shard_urls, servers.urls[2])
        finally:
            await asyncio.to_thread(servers.close)

    async def _measure(
        self, bench: Bench, catalog: str, shard_urls: list[str], head: str
    ) -> Outcome:
        await create(catalog, shard_urls, "modulo")
        users = await ShardedUsers.open(catalog, machine=1)
        direct = [await sql.Database(url, max_size=2).open() for url in shard_urls]
        rows: list[dict[str, Any]] = []
        notes: list[str] = []
        try:
            loaded = await self._load(bench, users, direct)
            ids = [row[0] for row in loaded]
            rng = random.Random(17)
            sample = [rng.choice(ids) for _ in range(self.reads)]

            async def routed(user_id: int) -> object:
                return await users.get(user_id)

            async def straight(user_id: int) -> object:
                db = direct[users.map.shard_for(user_id)]  # the shard, known beforehand
                return await db.fetchone(
                    "SELECT id, name, email FROM users WHERE id = %s", (user_id,)
                )

            shard_of = {k: users.map.shard_for(k) for k in sample}

            async def known(user_id: int) -> object:
                return await direct[shard_of[user_id]].fetchone(
                    "SELECT id, name, email FROM users WHERE id = %s", (user_id,)
                )

            async def top(_: int) -> object:
                return await users.page(limit=100, order="name")

            with bench.progress("point reads", total=len(sample)) as advance:
                await _interleaved({"a": routed, "b": known}, sample[:200], lambda: None)
                timed = await _interleaved(
                    {"through": routed, "alone": known, "computed": straight}, sample, advance
                )
            through, alone, computed = timed["through"], timed["alone"], timed["computed"]
            rows.append(_row("point read straight to its shard", alone))
            rows.append(_row("point read, shard computed, then straight", computed))
            rows.append(_row("point read through the router", through))
            ratio = through.mean_ms / alone.mean_ms
            notes.append(
                f"Router overhead: {ratio:.2f}x the direct read's mean (p50 "
                f"{through.percentile_ms(50) / alone.percentile_ms(50):.2f}x); target "
                f"{TARGET_OVERHEAD}x. The router adds a map-version check in the same "
                "statement (a join with the one-row shard_epoch table) and its Python."
            )
            scatter = await _time(top, list(range(self.scatters)))
            rows.append(_row("scatter top-100 by name through the router (merge)", scatter))

            try:
                async with Spider.over(head, shard_urls) as spider:
                    await spider.load(loaded)
                    ours = [u.id for u in (await users.page(limit=100, order="name")).users]
                    theirs = await spider.top(100)
                    if ours != theirs:
                        notes.append("Spider's top-100 differs from the router's merge!")
                    via_spider = await _time(spider.get, sample)
                    spider_top = await _time(lambda _: spider.top(100), list(range(self.scatters)))
                    rows.append(_row("point read through Spider", via_spider))
                    rows.append(_row("scatter top-100 by name through Spider", spider_top))
                    notes.append(
                        "Spider: a third MariaDB server with the spider plugin; its table's two "
                        "partitions (PARTITION BY HASH (id)) are tables on the two shard "
                        "servers, holding a copy of the same users."
                    )
            except SpiderUnavailable as exc:
                notes.append(f"Spider not measured: {exc}")
        finally:
            for db in direct:
                await db.close()
            await users.close()
        notes.append(
            f"{self.users:,} users over 2 MariaDB shard servers, modulo router; "
            f"{self.reads:,} reads one at a time from one asyncio client."
        )
        notes.append("The seed published no figures for sharding.")
        return Outcome(
            rows,
            chart=Chart("read", ["mean (ms)", "p99 (ms)"], ylabel="ms"),
            notes=notes,
        )

    async def _load(
        self, bench: Bench, users: ShardedUsers, direct: list[sql.Database]
    ) -> list[tuple[int, str, str]]:
        """Users written straight to their shards in batches (through the router, one
        by one, would take minutes); the same rows the router would have written."""
        rng = random.Random(3)
        rows = [
            (k, f"user-{rng.randrange(10**6):06d}", f"{k}@example.com")
            for k in users.ids.next_ids(self.users)
        ]
        by_shard: dict[int, list[tuple[int, str, str]]] = {}
        for row in rows:
            by_shard.setdefault(users.map.shard_for(row[0]), []).append(row)
        with bench.progress("loading users", total=self.users) as advance:
            for index, placed in by_shard.items():
                db = direct[index]
                for start in range(0, len(placed), 500):
                    batch = placed[start : start + 500]
                    statement = db.dialect.insert("users", ["id", "name", "email"], len(batch))
                    await db.execute(statement, [x for row in batch for x in row])
                    advance(len(batch))
        return rows

    def headline(self, rows: list[Row]) -> Headline | None:
        direct = next(r for r in rows if r["read"] == "point read straight to its shard")
        routed = next(r for r in rows if r["read"] == "point read through the router")
        return Headline(
            "point read through the router / straight to its shard (mean)",
            routed["mean (ms)"] / direct["mean (ms)"],
            unit="x",
            target=1.2,
        )


async def _time(call: Callable[[int], Awaitable[object]], keys: list[int]) -> Latency:
    latency = Latency()
    for key in keys:
        with latency.time():
            await call(key)
    return latency


async def _interleaved(
    calls: dict[str, Callable[[int], Awaitable[object]]],
    keys: list[int],
    advance: Callable[[], None],
) -> dict[str, Latency]:
    """Each key read by every call in turn (the order rotating), so that the machine's
    other work falls on all of them alike."""
    latencies = {name: Latency() for name in calls}
    order = list(calls.items())
    for i, key in enumerate(keys):
        for name, call in order[i % len(order) :] + order[: i % len(order)]:
            with latencies[name].time():
                await call(key)
        advance()
    return latencies


def _row(read: str, latency: Latency) -> dict[str, Any]:
    return {"read": read, **latency.summary(percentiles=(50, 99))}


@register
@dataclass
class Move(Experiment):
    """Online resharding 2 -> 3 and back 3 -> 2 while writers insert, rename and delete:
    rows moved, the cutover (the writers' pause), and the writes' latency meanwhile."""

    name = "sharding-move"
    system = "sharding"
    title = "Sharding: online resharding under writes"
    services = ("mysql",)

    users: int = 20_000
    writers: int = 4

    @classmethod
    def quick(cls) -> Self:
        return cls(users=4_000, writers=3)

    async def run(self, bench: Bench) -> Outcome:
        servers = await asyncio.to_thread(infra.mariadb, 3)
        try:
            shard_urls = [sql.with_database(url, "sdlab_shard") for url in servers.urls]
            server = bench.endpoint("mysql").url
            async with sql.scratch_database(server, prefix="sdlab_sharding_move") as catalog:
                await create(catalog, shard_urls[:2], "ring")
                async with await ShardedUsers.open(catalog, machine=1) as users:
                    direct = [await sql.Database(u, max_size=2).open() for u in shard_urls[:2]]
                    try:
                        await Reads(users=self.users)._load(bench, users, direct)
                    finally:
                        for db in direct:
                            await db.close()
                    rows = []
                    with bench.progress("moves", total=2) as advance:
                        for target in (shard_urls, shard_urls[:2]):
                            rows.append(await self._move(users, catalog, target))
                            advance()
        finally:
            await asyncio.to_thread(servers.close)
        return Outcome(
            rows,
            chart=Chart(
                "move",
                ["cutover (ms)", "write p99 (ms)", "write max (ms)"],
                ylabel="ms: the writers' pause, and their writes' latency",
            ),
            notes=[
                f"{self.users:,} users, ring router; {self.writers} writers (each its own "
                "router process's view: its own map and pools), one write at a time each, "
                "half inserts, a third renames, the rest deletes.",
                "cutover: from fencing the old shards to publishing the new map; writes "
                "routed by the old map wait, refused, for it (then go to the new shards).",
                "The seed published no figures for sharding.",
            ],
        )

    async def _move(self, users: ShardedUsers, catalog: str, target: list[str]) -> dict[str, Any]:
        writers = [await ShardedUsers.open(catalog, machine=10 + i) for i in range(self.writers)]
        stop = asyncio.Event()
        latency = Latency()
        failed = 0

        async def write(w: ShardedUsers, seed: int) -> None:
            nonlocal failed
            rng = random.Random(seed)
            mine: list[int] = []
            while not stop.is_set():
                with latency.time():
                    roll = rng.random()
                    if roll < 0.5 or not mine:
                        mine.append((await w.insert(f"w{seed}", "w@x")).id)
                    elif roll < 0.8:
                        await w.update(rng.choice(mine), name=f"r{rng.randrange(1000)}")
                    else:
                        await w.delete(mine.pop(rng.randrange(len(mine))))

        try:
            tasks = [asyncio.create_task(write(w, i)) for i, w in enumerate(writers)]
            await asyncio.sleep(0.3)
            report = await reshard(users, target)
            await asyncio.sleep(0.3)
            stop.set()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            failed = sum(isinstance(r, BaseException) for r in results)
        finally:
            for w in writers:
                await w.close()
        return {
            "move": f"{len(report.from_map.shards)} -> {len(report.to_map.shards)} shards",
            "rows copied": report.rows_copied,
            "changes replayed": report.changes_replayed,
            "move (s)": report.seconds,
            "cutover (ms)": report.cutover_ms,
            "writes": latency.count,
            "write p50 (ms)": latency.percentile_ms(50),
            "write p99 (ms)": latency.percentile_ms(99),
            "write max (ms)": latency.max_ms,
            "rerouted": sum(w.rerouted for w in writers),
            "writers failed": failed,
        }


ALL: list[type[Experiment]] = [Routing, Reads, Move]
