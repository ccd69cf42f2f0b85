"""The sharded repository on real shard servers: point operations, multi-get, merged
listings equal to one unsharded table's, pagination that visits every row once."""

from __future__ import annotations

import random
import string

import pytest

from sdlab import sql
from sdlab.sharding.repository import BadCursor, ShardedUsers, UserNotFound
from tests.sharding.conftest import OpenUsers


def random_name(rng: random.Random) -> str:
    # upper and lower case, and repeats, so ties and the collation matter
    return "".join(rng.choice("aAbB é") for _ in range(rng.randint(1, 3)))


async def test_insert_get_update_delete(open_users: OpenUsers) -> None:
    users = await open_users()
    alice = await users.insert("alice", "alice@example.com")
    assert alice.shard == f"shard-{users.map.shard_for(alice.id)}"
    assert await users.get(alice.id) == alice
    renamed = await users.update(alice.id, name="Alice")
    assert renamed.name == "Alice"
    assert renamed.email == "alice@example.com"
    assert (await users.update(alice.id, name="Alice")) == renamed  # same value: still found
    await users.delete(alice.id)
    with pytest.raises(UserNotFound):
        await users.get(alice.id)
    with pytest.raises(UserNotFound):
        await users.delete(alice.id)
    with pytest.raises(UserNotFound):
        await users.update(alice.id, name="x")


async def test_rows_spread_over_the_shards_by_the_router(open_users: OpenUsers) -> None:
    users = await open_users(shards=3, router="jump")
    made = [await users.insert(f"u{i}", f"u{i}@example.com") for i in range(60)]
    counts = await users.count()
    assert sum(counts.values()) == 60
    assert all(count > 5 for count in counts.values()), counts
    for user in made:  # each row is where the router says, and only there
        for index, url in enumerate(users.map.shards):
            async with sql.Database(url, max_size=1) as db:
                here = await db.fetchval("SELECT COUNT(*) FROM users WHERE id = %s", (user.id,))
            assert here == (1 if index == users.map.shard_for(user.id) else 0)


async def test_multi_get_asks_each_shard_once(open_users: OpenUsers) -> None:
    users = await open_users(shards=3, router="ring")
    made = [await users.insert(f"u{i}", f"u{i}@x") for i in range(20)]
    wanted = [u.id for u in made[::2]] + [12345]  # one that does not exist
    found = await users.get_many(wanted)
    assert found == {u.id: u for u in made[::2]}


@pytest.mark.parametrize("order", ["id", "name", "email"])
async def test_merged_order_by_limit_equals_one_unsharded_table(
    open_users: OpenUsers, mysql_db: str, order: str
) -> None:
    users = await open_users(shards=3, router="rendezvous")
    rng = random.Random(17)
    made = [await users.insert(random_name(rng), random_name(rng)) for _ in range(120)]
    async with sql.Database(mysql_db, max_size=1) as single:  # the same rows, one table
        text = single.dialect.binary_collation
        await single.execute(
            f"CREATE TABLE one_table (id BIGINT PRIMARY KEY, name VARCHAR(200) {text}, "
            f"email VARCHAR(320) {text})"
        )
        for user in made:
            await single.execute(
                "INSERT INTO one_table VALUES (%s, %s, %s)", (user.id, user.name, user.email)
            )
        for limit in (1, 7, 50, 200):
            tie = "" if order == "id" else ", id"
            expected = await single.fetch(
                f"SELECT id FROM one_table ORDER BY {order}{tie} LIMIT {limit}"
            )
            page = await users.page(limit=limit, order=order)
            assert [u.id for u in page.users] == [i for (i,) in expected]


@pytest.mark.parametrize("order", ["id", "name"])
async def test_pagination_visits_every_row_exactly_once(open_users: OpenUsers, order: str) -> None:
    users = await open_users(shards=3, router="modulo")
    rng = random.Random(5)
    made = {(await users.insert(random_name(rng), "e")).id for _ in range(101)}
    seen: list[int] = []
    cursor = None
    while True:
        page = await users.page(limit=10, cursor=cursor, order=order)
        seen += [u.id for u in page.users]
        if page.cursor is None:
            break
        cursor = page.cursor
    assert sorted(seen) == sorted(made)
    assert len(seen) == len(set(seen))


async def test_a_cursor_from_another_order_is_refused(open_users: OpenUsers) -> None:
    users = await open_users()
    for i in range(3):
        await users.insert(f"u{i}", "e")
    page = await users.page(limit=1, order="name")
    assert page.cursor
    with pytest.raises(BadCursor):
        await users.page(limit=1, order="id", cursor=page.cursor)
    with pytest.raises(BadCursor):
        await users.page(limit=1, cursor="".join(string.ascii_letters[:7]))


async def test_ids_are_unique_across_shards(open_users: OpenUsers) -> None:
    a = await open_users(machine=1)
    b = await ShardedUsers.open(a.catalog.db.url, machine=2)
    try:
        made = [await (a if i % 2 else b).insert("x", "y") for i in range(200)]
    finally:
        await b.close()
    assert len({u.id for u in made}) == 200
