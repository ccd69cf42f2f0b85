"""Changing the primary under write load: a switchover loses nothing; a failover after
the primary is SIGKILLed loses no write the router reported committed, with semi-sync."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from sdlab.replica import (
    PrimaryUnavailable,
    ReplicaError,
    Router,
    failover,
    observe_all,
    setup,
    switchover,
)
from tests.replica.conftest import Cluster, MakeCluster


async def write_load(
    router: Router, stop: asyncio.Event, ids: itertools.count
) -> tuple[set[int], int]:
    """Insert rows until told to stop: the ids the router reported committed, and how
    many writes failed (refused or lost while the primary changed)."""
    committed, failed = set(), 0
    while not stop.is_set():
        i = next(ids)
        try:
            await router.execute("INSERT INTO shop.orders VALUES (%s, 'tea')", (i,))
            committed.add(i)
        except PrimaryUnavailable:
            failed += 1
            await asyncio.sleep(0.01)
    return committed, failed


async def stored(url: str) -> set[int]:
    async with setup.admin(url) as s:
        return {row[0] for row in await s.fetch("SELECT id FROM shop.orders")}


async def under_write_load(
    cluster: Cluster, change, *, seconds: float = 1.0
) -> tuple[set[int], int]:
    async with Router(cluster.app, check_interval=0.1) as router:
        stop, ids = asyncio.Event(), itertools.count()
        writers = [asyncio.create_task(write_load(router, stop, ids)) for _ in range(4)]
        await asyncio.sleep(seconds)
        await change()
        await asyncio.sleep(seconds)  # the router finds the new primary and writes go on
        stop.set()
        results = await asyncio.gather(*writers)
        assert router.topology is not None
        committed = set().union(*(c for c, _ in results))
        after = {i for i in committed if i > max(committed) - 20}
        assert after, "no writes after the change"
    return committed, sum(f for _, f in results)


@pytest.mark.slow
async def test_switchover_loses_nothing(make_cluster: MakeCluster) -> None:
    cluster = await make_cluster(replicas=2)
    committed, _ = await under_write_load(cluster, lambda: switchover(cluster.nodes, "db2"))
    topology = await observe_all(cluster.nodes)
    assert [topology.role(n) for n in topology] == ["replica", "primary", "replica"]
    assert committed <= await stored(cluster.nodes["db2"])
    gtid = topology.node("db2").binlog_pos
    for name in ("db1", "db3"):  # the old primary follows the new one
        async with setup.admin(cluster.nodes[name]) as s:
            assert await s.fetchval("SELECT MASTER_GTID_WAIT(%s, 10)", (gtid,)) == 0
        assert await stored(cluster.nodes[name]) == await stored(cluster.nodes["db2"])


@pytest.mark.slow
@pytest.mark.parametrize("semisync", [True, False], ids=["semisync", "async"])
async def test_failover_after_the_replicas_fell_behind(
    make_cluster: MakeCluster, semisync: bool
) -> None:
    """The replicas stop receiving 0.5 s before the primary is SIGKILLed. With semi-sync
    no write the router reported committed is missing on the new primary (the writers
    waited instead); without it, the writes of that half second are lost: the reason
    semi-sync exists, and the proof that this test can fail."""
    cluster = await make_cluster(replicas=2, semisync=semisync)

    async def fall_behind_crash_and_fail_over() -> None:
        for name in ("db2", "db3"):
            async with setup.admin(cluster.nodes[name]) as s:
                await s.execute("STOP SLAVE IO_THREAD")
        await asyncio.sleep(0.5)
        cluster.server("db1").kill()
        await failover(cluster.nodes)

    committed, failed = await under_write_load(cluster, fall_behind_crash_and_fail_over)
    topology = await observe_all(cluster.nodes)
    primary = topology.primary
    assert primary is not None
    assert primary.name in ("db2", "db3")
    assert topology.role(topology.node("db1")) == "down"
    lost = committed - await stored(primary.url)
    assert (len(lost) == 0) if semisync else (len(lost) > 0)
    assert failed > 0  # writes did fail while there was no primary: the test saw the gap


async def test_failover_refuses_a_live_primary_unless_forced(make_cluster: MakeCluster) -> None:
    cluster = await make_cluster(replicas=1)
    with pytest.raises(ReplicaError, match="db1 answers: use switchover"):
        await failover(cluster.nodes)
    topology = await failover(cluster.nodes, force=True)
    assert [topology.role(n) for n in topology] == ["detached", "primary"]
    assert topology.node("db1").read_only  # it cannot take writes beside the new primary
