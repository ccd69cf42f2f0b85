"""A replicated cluster of private MariaDB servers for each test that asks for one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import pytest

from sdlab import infra
from sdlab.infra.instance import Instance, Instances
from sdlab.infra.pytest_plugin import Servers
from sdlab.infra.service import run_sync
from sdlab.replica import setup

TABLE = "CREATE TABLE shop.orders (id INT PRIMARY KEY, item VARCHAR(40) NOT NULL)"


@dataclass
class Cluster:
    """Private servers set up as a primary (db1) and replicas (db2, ...)."""

    servers: Instances

    @property
    def nodes(self) -> dict[str, str]:
        """name -> root URL: what setup and failover are given."""
        return {f"db{i}": server.url for i, server in enumerate(self.servers, 1)}

    @property
    def app(self) -> dict[str, str]:
        """name -> the application user's URL: what a Router is given."""
        return {name: setup.app_url(url) for name, url in self.nodes.items()}

    def server(self, name: str) -> Instance:
        return self.servers[int(name.removeprefix("db")) - 1]


MakeCluster = Callable[..., Awaitable[Cluster]]


async def build(started: Instances, *, semisync: bool = False, table: bool = True) -> Cluster:
    cluster = Cluster(started)
    urls = list(cluster.nodes.values())
    if table:
        async with setup.admin(urls[0]) as s:
            await s.execute("CREATE DATABASE shop")
            await s.execute(TABLE)
    await setup.build(urls[0], dict(list(cluster.nodes.items())[1:]), semisync=semisync)
    return cluster


@pytest.fixture
def make_cluster(servers: Servers) -> MakeCluster:
    """`await make_cluster(replicas=2, semisync=False)`: built, verified, with an empty
    `shop.orders` table replicated everywhere. Closed after the test. For tests that
    break the cluster; the others share `shared_cluster`."""

    async def make(replicas: int = 2, *, semisync: bool = False, table: bool = True) -> Cluster:
        started = servers.mariadb(1 + replicas, options=setup.server_options(semisync=semisync))
        return await build(started, semisync=semisync, table=table)

    return make


@pytest.fixture(scope="session")
def shared_cluster() -> Iterator[Cluster]:
    """One primary and two replicas for the tests that leave them as they found them
    (each in a table of its own: `orders`). Building a cluster costs seconds."""
    with infra.mariadb(3, options=setup.server_options()) as started:
        yield run_sync(lambda: build(started))


@pytest.fixture
async def orders(shared_cluster: Cluster, namespace: str) -> str:
    """A fresh `shop.<namespace>` table like shop.orders on the shared cluster, already
    on both replicas; its qualified name."""
    table = f"shop.{namespace}"
    async with setup.admin(shared_cluster.nodes["db1"]) as s:
        await s.execute(f"CREATE TABLE {table} LIKE shop.orders")
        gtid = str(await s.fetchval("SELECT @@last_gtid"))
    for name in ("db2", "db3"):
        async with setup.admin(shared_cluster.nodes[name]) as s:
            assert await s.fetchval("SELECT MASTER_GTID_WAIT(%s, 10)", (gtid,)) == 0
    return table
