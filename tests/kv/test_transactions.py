"""MULTI/EXEC/DISCARD/WATCH over the Redis protocol, with redis-py as the client, on every
backend: a transaction is one SQL transaction (all of it or none, never half of it
seen), WATCH aborts EXEC when a watched key changed, whoever changed it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError, WatchError

from sdlab.kv import Store
from sdlab.kv.resp import request
from sdlab.kv.server import RespServer
from tests.kv.test_server import raw


@pytest.fixture
async def server(backend_url: str) -> AsyncIterator[RespServer]:
    async with Store(backend_url, sweep_interval=0) as kv:
        server = RespServer(kv, port=0)
        await server.start()
        yield server
        await server.close()


@pytest.fixture
async def client(server: RespServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(port=server.port)
    yield client
    await client.aclose()


async def test_a_transaction_pipeline_answers_and_applies(client: aioredis.Redis) -> None:
    # The one-liner: redis-py's default pipeline is MULTI ... EXEC.
    assert await client.pipeline().set("k", "v").incr("c").execute() == [True, 1]
    assert await client.mget("k", "c") == [b"v", b"1"]
    async with client.pipeline() as pipe:  # reads inside see the writes before them
        pipe.set("n", 1).incr("n").get("n").delete("n").exists("n").ttl("k").ping()
        assert await pipe.execute() == [True, 2, b"2", 1, 0, -1, True]


async def test_a_pipeline_without_transaction_still_groups(
    server: RespServer, client: aioredis.Redis
) -> None:
    async with client.pipeline(transaction=False) as pipe:
        for i in range(50):
            pipe.set(f"k{i}", i)
        pipe.get("k49")
        assert await pipe.execute() == [True] * 50 + [b"49"]
    assert server.store.stats()["largest_batch"] > 1  # the SETs shared a transaction


async def test_a_command_refused_while_queued_aborts_all(client: aioredis.Redis) -> None:
    pipe = client.pipeline()
    pipe.set("a", 1).execute_command("NOSUCH").set("b", 2)
    with pytest.raises(ResponseError, match="unknown command 'NOSUCH'"):
        await pipe.execute()
    assert await client.mget("a", "b") == [None, None]
    got = await raw(
        client.connection_pool.connection_kwargs["port"],
        request("MULTI") + request("SET", "a", "1") + request("GET") + request("EXEC")
        + request("GET", "a"),
    )  # fmt: skip
    assert got == (
        b"+OK\r\n+QUEUED\r\n-ERR wrong number of arguments for 'get' command\r\n"
        b"-EXECABORT Transaction discarded because of previous errors.\r\n$-1\r\n"
    )


async def test_a_command_failing_inside_exec_answers_its_error_and_the_rest_apply(
    client: aioredis.Redis,
) -> None:
    await client.set("text", "hello")
    pipe = client.pipeline()
    pipe.set("a", 1).incr("text").set("b", 2, ex=0).set("c", 3)
    results = await pipe.execute(raise_on_error=False)
    assert (results[0], results[3]) == (True, True)
    assert "not an integer" in str(results[1])
    assert "invalid expire time" in str(results[2])
    assert await client.mget("a", "text", "b", "c") == [b"1", b"hello", None, b"3"]


async def test_watch_aborts_exec_after_another_client_writes(
    server: RespServer, client: aioredis.Redis
) -> None:
    other = aioredis.Redis(port=server.port)
    try:
        await client.set("balance", 10)
        async with client.pipeline() as pipe:
            await pipe.watch("balance")
            assert await pipe.get("balance") == b"10"  # immediate mode, after WATCH
            await other.set("balance", 10)  # the same value: still a write (this process)
            pipe.multi()
            pipe.set("balance", 5).set("spent", 5)
            with pytest.raises(WatchError):
                await pipe.execute()
        assert await client.mget("balance", "spent") == [b"10", None]
        async with client.pipeline() as pipe:  # a write through the library (or HTTP)
            await pipe.watch("balance")
            await server.store.set("balance", 10)
            pipe.multi()
            pipe.set("balance", 5)
            with pytest.raises(WatchError):
                await pipe.execute()
        async with client.pipeline() as pipe:  # unwatched now: it goes through
            await pipe.watch("balance")
            pipe.multi()
            pipe.set("balance", 5)
            assert await pipe.execute() == [True]
        assert not server.watches  # nobody watches anything any more
    finally:
        await other.aclose()


async def test_watch_sees_another_server_on_the_same_table(backend_url: str) -> None:
    """Two servers (two stores) on one table: the second's write is not in the first's
    registry, so EXEC finds it by reading the watched keys again inside its transaction.
    Expiry and deletion count as changes, as in Redis."""
    async with (
        Store(backend_url, sweep_interval=0) as first,
        Store(backend_url, sweep_interval=0) as second,
    ):
        servers = [RespServer(first, port=0), RespServer(second, port=0)]
        for server in servers:
            await server.start()
        ours, theirs = (aioredis.Redis(port=s.port) for s in servers)
        try:

            async def exec_after(key: str, change: object) -> list[object] | None:
                async with ours.pipeline() as pipe:
                    await pipe.watch(key)
                    await change  # type: ignore[misc]
                    pipe.multi()
                    pipe.set("result", key)
                    try:
                        return await pipe.execute()  # type: ignore[no-any-return]
                    except WatchError:
                        return None

            await theirs.mset({"w1": "a", "w2": "a", "w3": "a", "w4": "a"})
            await theirs.set("w5", "a", px=200)
            assert await exec_after("w1", theirs.set("w1", "b")) is None
            assert await exec_after("w2", theirs.delete("w2")) is None
            assert await exec_after("w3", theirs.set("new", "x")) == [True]  # another key
            assert await exec_after("w4", theirs.expire("w4", 100)) is None  # its TTL
            assert await exec_after("w5", asyncio.sleep(0.3)) is None  # it expired
            assert await exec_after("w6", theirs.set("w6", "born")) is None  # created
            # The documented difference from Redis: the same value and expiry, written by
            # another server, leave nothing to compare, so EXEC goes through.
            assert await exec_after("w1", theirs.set("w1", "b")) == [True]
            assert await ours.get("result") == b"w1"
        finally:
            await ours.aclose()
            await theirs.aclose()
            for server in servers:
                await server.close()


async def test_nobody_sees_half_a_transaction(server: RespServer) -> None:
    """A reader loops MGET a:i b:i while transactions set both: it sees both or
    neither, and the same value in both."""
    writer, reader = aioredis.Redis(port=server.port), aioredis.Redis(port=server.port)
    done = False
    seen: list[list[bytes | None]] = []

    async def read() -> None:
        while not done:
            for i in range(0, 200, 7):
                seen.append(await reader.mget(f"a:{i}", f"b:{i}"))

    reading = asyncio.create_task(read())
    try:
        for round_ in range(3):
            for i in range(200):
                pipe = writer.pipeline()
                pipe.set(f"a:{i}", round_).set(f"b:{i}", round_).incr("count")
                await pipe.execute()
    finally:
        done = True
        await reading
        await writer.aclose()
        await reader.aclose()
    halves = [pair for pair in seen if pair[0] != pair[1]]
    assert not halves, f"{len(halves)} of {len(seen)} reads saw half a transaction"
    assert len(seen) > 20


async def test_transactions_of_many_clients_at_once_lose_no_increment(
    server: RespServer,
) -> None:
    clients = [aioredis.Redis(port=server.port) for _ in range(10)]

    async def run(client: aioredis.Redis, n: int) -> None:
        for i in range(20):
            await client.pipeline().incr("total").set(f"last:{n}", i).execute()

    try:
        await asyncio.gather(*(run(c, n) for n, c in enumerate(clients)))
        assert await clients[0].get("total") == b"200"
    finally:
        for c in clients:
            await c.aclose()


async def test_a_failing_database_fails_the_whole_exec(backend_url: str) -> None:
    async with Store(backend_url, sweep_interval=0) as kv:
        server = RespServer(kv, port=0)
        await server.start()
        client = aioredis.Redis(port=server.port)
        try:
            await kv.backend.close()  # the database is gone under the server
            with pytest.raises(ResponseError):
                await client.pipeline().set("a", 1).set("b", 2).execute()
        finally:
            await client.aclose()
            await server.close()
