"""The HTTP API on real shard servers; a shard killed mid-load fails only its keys."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from sdlab import sql
from sdlab.sharding.repository import ShardedUsers, create
from sdlab.sharding.service import create_app
from tests.sharding.conftest import OpenUsers


def client(users: ShardedUsers) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(users))
    return httpx.AsyncClient(transport=transport, base_url="http://sharding")


async def test_the_users_api(open_users: OpenUsers) -> None:
    users = await open_users(shards=3, router="ring")
    async with client(users) as http:
        made = await http.post("/users", json={"name": "alice", "email": "alice@example.com"})
        assert made.status_code == 201
        alice = made.json()
        assert alice["shard"] == f"shard-{users.map.shard_for(alice['id'])}"
        assert (await http.get(f"/users/{alice['id']}")).json() == alice
        changed = await http.patch(f"/users/{alice['id']}", json={"name": "Alice"})
        assert changed.json() == {**alice, "name": "Alice"}
        for i in range(5):
            await http.post("/users", json={"name": f"u{i}", "email": f"u{i}@x.y"})
        first = (await http.get("/users", params={"limit": 4, "order": "name"})).json()
        assert [u["name"] for u in first["users"]] == ["Alice", "u0", "u1", "u2"]
        rest = (
            await http.get(
                "/users", params={"limit": 4, "order": "name", "cursor": first["cursor"]}
            )
        ).json()
        assert [u["name"] for u in rest["users"]] == ["u3", "u4"]
        assert rest["cursor"] is None
        assert (await http.delete(f"/users/{alice['id']}")).status_code == 204
        gone = await http.get(f"/users/{alice['id']}")
        assert gone.status_code == 404
        assert gone.json() == {"detail": f"no user {alice['id']}"}
        shards = (await http.get("/shards")).json()
        assert shards["version"] == 1
        assert sum(s["users"] for s in shards["shards"]) == 5


async def test_a_catalog_that_is_down_is_503(open_users: OpenUsers, unused_port: int) -> None:
    users = await open_users()
    live = users.catalog.db
    users.catalog.db = sql.Database(f"mysql://root@127.0.0.1:{unused_port}/nowhere", timeout=1)
    try:
        async with client(users) as http:
            answer = await http.get("/shards")
    finally:
        users.catalog.db = live
    assert answer.status_code == 503
    assert answer.json()["detail"].startswith("the shard map's catalog: ")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/users", {"name": "", "email": "a@b"}),
        ("post", "/users", {"name": "x", "email": "not an email"}),
        ("post", "/users", {"email": "a@b"}),
        ("get", "/users?limit=0", None),
        ("get", "/users?order=password", None),
        ("get", "/users?cursor=nonsense", None),
        ("get", "/users/abc", None),
        ("patch", "/users/1", {"email": "x"}),
    ],
)
async def test_bad_requests_are_422_with_a_detail(
    open_users: OpenUsers, method: str, path: str, body: dict[str, str] | None
) -> None:
    users = await open_users()
    async with client(users) as http:
        answer = await http.request(method, path, json=body)
    assert answer.status_code == 422
    assert answer.json()["detail"]


@pytest.mark.slow
async def test_a_killed_shard_fails_only_its_keys_and_loses_nothing(
    servers: object, mysql_db: str
) -> None:
    pair = servers.mariadb(2)  # type: ignore[attr-defined]
    urls = [sql.with_database(url, "sdlab_shard") for url in pair.urls]
    await create(mysql_db, urls, "jump")
    users = await ShardedUsers.open(mysql_db, shard_timeout=1.0)
    acknowledged: dict[int, str] = {}
    refused: Counter[str] = Counter()
    stop = asyncio.Event()

    async def load(http: httpx.AsyncClient, n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            answer = await http.post("/users", json={"name": f"l{n}-{i}", "email": "l@x.y"})
            if answer.status_code == 201:
                acknowledged[answer.json()["id"]] = answer.json()["shard"]
            else:
                assert answer.status_code == 503, answer.text
                refused[answer.json()["shard"]] += 1
                assert "shard-1 (127.0.0.1:" in answer.json()["detail"]
                await asyncio.sleep(0.01)

    try:
        async with client(users) as http:
            tasks = [asyncio.create_task(load(http, n)) for n in range(4)]
            await asyncio.sleep(0.5)
            await asyncio.to_thread(pair[1].kill)  # SIGKILL, mid-load
            killed_at = len(acknowledged)
            await asyncio.sleep(2.0)
            during = dict(list(acknowledged.items())[killed_at:])
            on_healthy = next(k for k, shard in acknowledged.items() if shard == "shard-0")
            on_dead = next(k for k, shard in acknowledged.items() if shard == "shard-1")
            assert (await http.get(f"/users/{on_healthy}")).status_code == 200
            dead = await http.get(f"/users/{on_dead}")
            assert dead.status_code == 503
            assert dead.json()["shard"] == "shard-1"
            listing = await http.get("/users")
            assert listing.status_code == 503
            assert listing.json()["shard"] == "shard-1"
            stop.set()
            await asyncio.gather(*tasks)
            assert set(refused) == {"shard-1"}
            assert during, "no write succeeded while shard-1 was down"
            assert set(during.values()) == {"shard-0"}

            await asyncio.to_thread(pair[1].start)
            for _ in range(100):  # the pool reconnects by itself
                if (await http.get(f"/users/{on_dead}")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            found = await users.get_many(acknowledged)
            assert set(found) == set(acknowledged), "acknowledged users missing after restart"
            assert {k: u.shard for k, u in found.items()} == acknowledged
            print(f"acknowledged {len(acknowledged)}, refused {dict(refused)}")
    finally:
        await users.close()
