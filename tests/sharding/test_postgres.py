"""The same repository and move with PostgreSQL databases as the shards."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sdlab import sql
from sdlab.sharding import ShardedUsers, create, reshard


@pytest.fixture
async def pg_shards(postgres_url: str, namespace: str) -> AsyncIterator[list[str]]:
    urls = [sql.with_database(postgres_url, f"{namespace}_{i}") for i in range(3)]
    yield urls
    for url in urls:
        await sql.drop_database(url)


async def test_postgres_shards_list_merge_and_move(mysql_db: str, pg_shards: list[str]) -> None:
    await create(mysql_db, pg_shards[:2], "rendezvous")
    async with await ShardedUsers.open(mysql_db) as users:
        made = [await users.insert(name, f"{name}@x") for name in ["b", "B", "a", "é", "ab", "c"]]
        page = await users.page(limit=4, order="name")
        assert [u.name for u in page.users] == ["B", "a", "ab", "b"]
        report = await reshard(users, pg_shards, "jump")
        assert report.to_map.shards == tuple(pg_shards)
        assert {u.id: u.name for u in (await users.get_many(u.id for u in made)).values()} == {
            u.id: u.name for u in made
        }
        assert sum((await users.count()).values()) == len(made)
