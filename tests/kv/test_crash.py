"""Kill the server (SIGKILL) in the middle of a write load: every write that was
answered OK is in the database afterwards. The server is a real process; the load is
30 redis-py clients writing keys of their own. Stop it (SIGTERM) in the middle of a
pipeline: it answers every command it took, and ran no other. Kill the database under
it: every write hears of it (none waits for ever), none acknowledged is lost, and the
store gets over it once the database is back. Kill it while clients run MULTI ... EXEC:
each transaction is in the table whole or not at all."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from sdlab.infra.pytest_plugin import Servers
from sdlab.kv import BackendUnavailable, Store
from sdlab.kv.resp import request
from sdlab.kv.service import ServerProcess
from tests.helpers import eventually

CLIENTS = 30


async def write_until_killed(port: int, acked: dict[str, str], client_id: int) -> None:
    client = aioredis.Redis(port=port, protocol=2, retry_on_error=[], socket_timeout=10)
    try:
        for i in range(100_000):
            key, value = f"c{client_id}:{i}", f"v{client_id}.{i}"
            if await client.set(key, value):
                acked[key] = value
    except (RedisConnectionError, ConnectionError, OSError):
        return  # the server is gone: this write was never acknowledged
    finally:
        await client.aclose(close_connection_pool=True)


@pytest.mark.slow
@pytest.mark.parametrize("naive", [False, True], ids=["group", "naive"])
async def test_every_acknowledged_write_survives_a_kill(backend_url: str, naive: bool) -> None:
    acked: dict[str, str] = {}
    with ServerProcess(backend_url, naive=naive, http=False) as server:
        load = [
            asyncio.create_task(write_until_killed(server.resp_port, acked, c))
            for c in range(CLIENTS)
        ]
        while len(acked) < 600:  # well into the load: batches are in flight
            await asyncio.sleep(0.01)
            assert not all(task.done() for task in load), server.output()
        await asyncio.to_thread(server.kill)
        await asyncio.wait_for(asyncio.gather(*load), 30)
    async with Store(backend_url, sweep_interval=0) as kv:
        keys = list(acked)
        stored = await kv.mget(keys)
    lost = [k for k, v in zip(keys, stored, strict=True) if v != acked[k].encode()]
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged writes lost: {lost[:5]}"
    assert len(acked) >= 600


async def transact_until_killed(port: int, acked: list[int], client_id: int) -> None:
    """EXEC after EXEC of three writes: SET a:i, SET b:i, INCR count."""
    client = aioredis.Redis(port=port, protocol=2, retry_on_error=[], socket_timeout=10)
    try:
        for i in range(100_000):
            pipe = client.pipeline()  # MULTI ... EXEC
            pipe.set(f"t{client_id}:a:{i}", i).set(f"t{client_id}:b:{i}", i)
            pipe.incr(f"t{client_id}:count")
            assert await pipe.execute() == [True, True, i + 1]
            acked.append(i)
    except (RedisConnectionError, ConnectionError, OSError):
        return  # the server is gone: this transaction was never acknowledged
    finally:
        await client.aclose(close_connection_pool=True)


@pytest.mark.slow
@pytest.mark.parametrize("naive", [False, True], ids=["group", "naive"])
async def test_a_kill_leaves_each_transaction_whole_or_not_at_all(
    backend_url: str, naive: bool
) -> None:
    acked: list[list[int]] = [[] for _ in range(CLIENTS // 3)]
    with ServerProcess(backend_url, naive=naive, http=False) as server:
        load = [
            asyncio.create_task(transact_until_killed(server.resp_port, mine, c))
            for c, mine in enumerate(acked)
        ]
        while sum(map(len, acked)) < 300:  # well into the load: transactions in flight
            await asyncio.sleep(0.01)
            assert not all(task.done() for task in load), server.output()
        await asyncio.to_thread(server.kill)
        await asyncio.wait_for(asyncio.gather(*load), 30)
    async with Store(backend_url, sweep_interval=0) as kv:
        for c, mine in enumerate(acked):
            tried = range(len(mine) + 1)  # every one acknowledged, and one in flight
            a = await kv.mget([f"t{c}:a:{i}" for i in tried])
            b = await kv.mget([f"t{c}:b:{i}" for i in tried])
            count = int(await kv.get(f"t{c}:count") or 0)
            assert a == b, f"client {c}: half a transaction in the table"
            stored = [i for i, value in zip(tried, a, strict=True) if value == str(i).encode()]
            assert stored == list(range(count)), f"client {c}: INCR and SETs disagree"
            assert count >= len(mine), f"client {c}: an acknowledged transaction is lost"


async def test_sigterm_answers_every_command_it_took(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kv.sqlite3'}"
    keys = [f"k{i}" for i in range(5000)]
    with ServerProcess(url, http=False) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.resp_port)
        writer.write(b"".join(request("SET", key, "v") for key in keys))
        await writer.drain()
        replies = await reader.readuntil(b"\r\n")  # it is at work on the pipeline
        await asyncio.to_thread(server.stop)
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                replies += chunk
        writer.close()
    async with Store(url, sweep_interval=0) as kv:
        stored = await kv.exists(*keys)
    assert stored > 0
    assert replies == b"+OK\r\n" * stored  # nothing ran unanswered


@pytest.mark.slow
async def test_a_database_killed_under_load_loses_no_acknowledged_write(
    servers: Servers,
) -> None:
    (db,) = servers.postgres()
    acked: list[str] = []

    async def write_until_it_fails(kv: Store, client_id: int) -> None:
        for i in range(100_000):
            try:
                await kv.set(f"c{client_id}:{i}", "v")
            except BackendUnavailable:
                return
            acked.append(f"c{client_id}:{i}")

    async def writes_again(kv: Store) -> bool:
        try:
            return await kv.set("again", "v")
        except BackendUnavailable:
            return False

    async with Store(db.url, sweep_interval=0, timeout=2) as kv:
        load = [asyncio.create_task(write_until_it_fails(kv, c)) for c in range(10)]
        while len(acked) < 300:  # well into the load: batches are in flight
            await asyncio.sleep(0.01)
            assert not all(task.done() for task in load)
        await asyncio.to_thread(db.kill)
        await asyncio.wait_for(asyncio.gather(*load), 60)  # every writer heard
        await asyncio.to_thread(db.start)
        assert await eventually(lambda: writes_again(kv), True, timeout=30)
        stored = await kv.mget(acked)
    lost = [key for key, value in zip(acked, stored, strict=True) if value != b"v"]
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged writes lost: {lost[:5]}"
