"""Fixtures of the sharding tests: private MariaDB shard servers and clusters on them.

Three shard servers are started once for the session (each test gets databases of its
own on them); tests that crash a server start their own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from sdlab import infra, sql
from sdlab.infra import Instances
from sdlab.sharding.repository import ShardedUsers, create

OpenUsers = Callable[..., Awaitable[ShardedUsers]]


@pytest.fixture(scope="session")
def shard_servers() -> Iterator[Instances]:
    with infra.mariadb(3) as servers:
        yield servers


@pytest.fixture
def shard_urls(shard_servers: Instances, namespace: str) -> list[str]:
    """A database named after the test on each shard server (created by `create`)."""
    return [sql.with_database(url, namespace) for url in shard_servers.urls]


@pytest.fixture
async def open_users(mysql_db: str, shard_urls: list[str]) -> AsyncIterator[OpenUsers]:
    """`await open_users(shards=2, router="modulo")`: a cluster over the first `shards`
    shard servers (created on first call), and a repository on it; another call opens
    another router process's view of the same cluster. All closed after the test."""
    opened: list[ShardedUsers] = []

    async def open_one(shards: int = 2, router: str = "modulo", **options: object) -> ShardedUsers:
        await create(mysql_db, shard_urls[:shards], router)
        users = await ShardedUsers.open(mysql_db, **options)
        opened.append(users)
        return users

    yield open_one
    for users in opened:
        await users.close()
    for url in shard_urls:
        await sql.drop_database(url)
