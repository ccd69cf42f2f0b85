"""Setting up replication: seeded from a snapshot, rows and DDL replicated, verified."""

from __future__ import annotations

import pytest

from sdlab import sql
from sdlab.infra.pytest_plugin import Servers
from sdlab.replica import ReplicationBroken, observe_all, setup
from sdlab.replica.topology import behind, covers, parse_position
from tests.replica.conftest import Cluster, MakeCluster


def test_gtid_positions_compare_per_domain() -> None:
    assert parse_position("0-1-5,1-2-9")[1].seq == 9
    assert behind("0-1-5,1-2-9", "0-1-3") == 2 + 9
    assert behind("0-1-5", "0-1-7") == 0
    assert covers("0-3-7,1-2-1", "0-1-7")
    assert not covers("0-3-6", "0-1-7")
    assert not covers("", "0-1-1")


async def wait_for(url: str, gtid: str) -> None:
    async with setup.admin(url) as s:
        assert await s.fetchval("SELECT MASTER_GTID_WAIT(%s, 10)", (gtid,)) == 0


async def test_rows_written_before_and_after_reach_every_replica_with_ddl(
    servers: Servers,
) -> None:
    """A replica starts from a snapshot of what the primary already had (rows written
    before it was attached), then follows rows and DDL; its GTIDs are the primary's."""
    primary, *replicas = servers.mariadb(3, options=setup.server_options())
    async with setup.admin(primary.url) as s:
        await s.execute("CREATE DATABASE shop")
        await s.execute("CREATE TABLE shop.orders (id INT PRIMARY KEY, item VARCHAR(40))")
        await s.execute("INSERT INTO shop.orders VALUES (1, 'tea'), (2, 'cake')")
        await s.execute("CREATE VIEW shop.teas AS SELECT id FROM shop.orders WHERE item = 'tea'")
    await setup.build(primary.url, {"db2": replicas[0].url, "db3": replicas[1].url})

    async with setup.admin(primary.url) as s:
        await s.execute("INSERT INTO shop.orders VALUES (3, 'tea')")
        await s.execute("ALTER TABLE shop.orders ADD COLUMN price INT NOT NULL DEFAULT 5")
        await s.execute("CREATE TABLE shop.later (id INT PRIMARY KEY)")
        await s.execute("INSERT INTO shop.later VALUES (9)")
        gtid = str(await s.fetchval("SELECT @@last_gtid"))
    for replica in replicas:
        await wait_for(replica.url, gtid)
        async with setup.admin(replica.url) as s:
            assert await s.fetch("SELECT id, item, price FROM shop.orders ORDER BY id") == [
                (1, "tea", 5),
                (2, "cake", 5),
                (3, "tea", 5),
            ]
            assert await s.fetch("SELECT id FROM shop.teas ORDER BY id") == [(1,), (3,)]
            assert await s.fetchval("SELECT id FROM shop.later") == 9
            position = str(await s.fetchval("SELECT @@gtid_binlog_pos"))
            assert parse_position(position)[0].server == primary.port  # nothing of its own
            assert await s.fetchval("SELECT @@read_only") == 1


async def test_the_topology_says_who_is_who(make_cluster: MakeCluster) -> None:
    cluster = await make_cluster(replicas=2)
    topology = await observe_all(cluster.nodes)
    assert [topology.role(n) for n in topology] == ["primary", "replica", "replica"]
    assert topology.primary is not None
    assert topology.primary.name == "db1"
    for replica in topology.replicas:
        assert replica.replicating
        assert replica.source == topology.primary.address
        assert topology.lag(replica) == 0

    async with setup.admin(cluster.nodes["db3"]) as s:
        await s.execute("STOP SLAVE SQL_THREAD")
    async with setup.admin(cluster.nodes["db1"]) as s:
        await s.execute("INSERT INTO shop.orders VALUES (1, 'tea'), (2, 'jam')")
        await s.execute("INSERT INTO shop.orders VALUES (3, 'tea')")
    cluster.server("db2").kill()
    topology = await observe_all(cluster.nodes)
    db3 = topology.node("db3")
    assert topology.role(topology.node("db2")) == "down"
    assert topology.lag(db3) == 2  # two transactions behind
    assert db3.sql_running == "No"
    assert topology.primary is not None
    assert topology.primary.name == "db1"


async def test_the_application_user_is_stopped_by_read_only(
    shared_cluster: Cluster, orders: str
) -> None:
    """What a switchover relies on: the application user's writes are refused on a
    read-only node (root's are not: MariaDB 10.11 gives it READ_ONLY ADMIN)."""
    async with sql.Database(shared_cluster.app["db2"], max_size=1) as replica:
        with pytest.raises(sql.SQLError) as refused:
            await replica.execute(f"INSERT INTO {orders} VALUES (1, 'tea')")
        assert refused.value.code == 1290


async def test_verify_names_a_replica_that_does_not_replicate(shared_cluster: Cluster) -> None:
    nodes = shared_cluster.nodes
    async with setup.admin(nodes["db3"]) as s:
        await s.execute("STOP SLAVE")
    try:
        with pytest.raises(ReplicationBroken, match=r"db3: .*IO thread No.*SQL thread No"):
            await setup.verify(nodes["db1"], {"db2": nodes["db2"], "db3": nodes["db3"]}, timeout=1)
    finally:
        async with setup.admin(nodes["db3"]) as s:
            await s.execute("START SLAVE")
