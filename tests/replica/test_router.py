"""The router: writes to the primary, reads to healthy replicas, read-your-writes, and
replicas that stall, crash, lag and come back."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from sdlab.replica import PrimaryUnavailable, Router, setup
from tests.replica.conftest import Cluster, MakeCluster


def reads(router: Router) -> Counter[str]:
    return router.stats.reads


async def test_writes_go_to_the_primary_and_reads_round_robin(
    shared_cluster: Cluster, orders: str
) -> None:
    cluster = shared_cluster
    async with Router(cluster.app) as router:
        written = await router.execute(f"INSERT INTO {orders} VALUES (%s, %s)", (1, "tea"))
        assert written.rowcount == 1
        assert written.gtid is not None
        assert written.gtid.split("-")[1] == str(cluster.server("db1").port)  # server_id = port
        query = f"SELECT item FROM {orders} WHERE id = 1"
        for _ in range(20):
            assert await router.fetchval(query, after=written.gtid) == "tea"
        assert reads(router) == {"db2": 10, "db3": 10}
        async with router.transaction() as tx:
            await tx.execute(f"INSERT INTO {orders} VALUES (2, 'jam')")
            assert await tx.fetchval(f"SELECT COUNT(*) FROM {orders}") == 2
        assert router.last_gtid is not None
        assert router.last_gtid != written.gtid


async def test_least_lag_prefers_the_replica_that_is_caught_up(
    shared_cluster: Cluster, orders: str
) -> None:
    cluster = shared_cluster
    async with delayed(cluster, "db2"), Router(cluster.app, strategy="least_lag") as router:
        # db2 stays healthy, but a transaction behind after this insert
        written = await router.execute(f"INSERT INTO {orders} VALUES (1, 'tea')")
        async with setup.admin(cluster.nodes["db3"]) as s:  # db3 has it, db2 will not
            assert await s.fetchval("SELECT MASTER_GTID_WAIT(%s, 10)", (written.gtid,)) == 0
        await router.refresh()
        for _ in range(10):
            await router.fetch("SELECT 1")
        assert reads(router) == {"db3": 10}


async def test_a_replica_past_the_lag_limit_is_skipped_until_it_catches_up(
    shared_cluster: Cluster, orders: str
) -> None:
    cluster = shared_cluster
    async with delayed(cluster, "db3"), Router(cluster.app, max_behind=0) as router:
        written = await router.execute(f"INSERT INTO {orders} VALUES (1, 'tea')")
        async with setup.admin(cluster.nodes["db2"]) as s:
            assert await s.fetchval("SELECT MASTER_GTID_WAIT(%s, 10)", (written.gtid,)) == 0
        await router.refresh()
        for _ in range(10):
            await router.fetch("SELECT 1")
        assert reads(router) == {"db2": 10}
        await delay(cluster, "db3", 0)
        await wait_until(lambda: reads_after(router, "db3"), router)


@asynccontextmanager
async def delayed(cluster: Cluster, node: str) -> AsyncIterator[None]:
    """A replica that applies nothing for an hour, for the block."""
    await delay(cluster, node, 3600)
    try:
        yield
    finally:
        await delay(cluster, node, 0)


async def delay(cluster: Cluster, node: str, seconds: int) -> None:
    """Make a replica apply each transaction `seconds` after the primary did."""
    async with setup.admin(cluster.nodes[node]) as s:
        await s.execute("STOP SLAVE")
        await s.execute(f"CHANGE MASTER TO MASTER_DELAY = {seconds}")
        await s.execute("START SLAVE")


async def reads_after(router: Router, node: str) -> bool:
    before = reads(router)[node]
    for _ in range(4):
        await router.fetch("SELECT 1")
    return reads(router)[node] > before


async def wait_until(check, router: Router, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"not in {timeout} s: {router.stats}"
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_read_your_writes_10000_times(shared_cluster: Cluster, orders: str) -> None:
    """A write followed at once by a read through the router always sees it, and the
    reads are served by the replicas (not all sent to the primary)."""
    async with Router(shared_cluster.app, wait_timeout=1.0) as router:

        async def client(first: int, count: int) -> list[int]:
            me = router.causal()
            missed = []
            for i in range(first, first + count):
                await me.execute(f"INSERT INTO {orders} VALUES (%s, 'tea')", (i,))
                if await me.fetchval(f"SELECT id FROM {orders} WHERE id = %s", (i,)) != i:
                    missed.append(i)
            return missed

        results = await asyncio.gather(*(client(k * 1000, 1000) for k in range(10)))
        assert [i for missed in results for i in missed] == []
        served = reads(router)
        assert sum(served.values()) == 10_000
        assert served["db2"] + served["db3"] > 5_000, router.stats


async def test_without_the_primary_writes_are_named_errors(make_cluster: MakeCluster) -> None:
    cluster = await make_cluster(replicas=1)
    async with Router(cluster.app) as router:

        async def crash_inside_a_transaction() -> None:
            async with router.transaction() as tx:
                await tx.execute("INSERT INTO shop.orders VALUES (1, 'tea')")
                cluster.server("db1").kill()
                await tx.execute("INSERT INTO shop.orders VALUES (2, 'tea')")

        with pytest.raises(PrimaryUnavailable) as inside:
            await crash_inside_a_transaction()
        assert not inside.value.maybe_committed  # lost before COMMIT: rolled back
        with pytest.raises(PrimaryUnavailable):
            await router.execute("INSERT INTO shop.orders VALUES (1, 'tea')")
        await router.refresh()
        with pytest.raises(PrimaryUnavailable, match="no primary answers"):
            await router.execute("INSERT INTO shop.orders VALUES (1, 'tea')")


async def read_load(router: Router, stop: asyncio.Event, errors: list[BaseException]) -> int:
    done = 0
    while not stop.is_set():
        try:
            await router.fetchval("SELECT COUNT(*) FROM shop.orders")
            done += 1
        except Exception as exc:  # the test's point: there must be none
            errors.append(exc)
        await asyncio.sleep(0)
    return done


async def stopped_under_load(cluster: Cluster, how: str) -> None:
    # max_behind=0: Seconds_Behind_Master said 0 while the restarted replica was still 50
    # transactions behind, so only the GTID positions tell when it has caught up.
    options = {"read_timeout": 0.5, "wait_timeout": 0.2, "check_timeout": 0.3, "max_behind": 0}
    async with Router(cluster.app, **options) as router:
        stop, errors = asyncio.Event(), []
        readers = [asyncio.create_task(read_load(router, stop, errors)) for _ in range(8)]
        await asyncio.sleep(0.5)
        server = cluster.server("db2")
        (server.pause if how == "pause" else server.kill)()
        await asyncio.sleep(1.0)
        during = reads(router)
        for i in range(50):  # the primary moves on while db2 is away
            await router.execute("INSERT INTO shop.orders VALUES (%s, 'tea')", (i,))
        await asyncio.sleep(1.0)
        assert reads(router)["db2"] == during["db2"], "reads went to a stopped replica"
        (server.resume if how == "pause" else server.start)()
        await wait_until(lambda: reads_after(router, "db2"), router)
        stop.set()
        await asyncio.gather(*readers)
        assert errors == []
        assert (
            await router.fetchval("SELECT COUNT(*) FROM shop.orders", after=router.last_gtid) == 50
        )


@pytest.mark.slow
@pytest.mark.parametrize("how", ["pause", "kill"])
async def test_a_stopped_replica_under_read_load(make_cluster: MakeCluster, how: str) -> None:
    """SIGSTOP or SIGKILL a replica while 8 tasks read: no caller sees an error (reads go
    to the other replica), and once it is back it catches up and takes reads again."""
    await stopped_under_load(await make_cluster(replicas=2), how)
