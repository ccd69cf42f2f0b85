"""Safety under a bad network and cancellation: findings of a review, each a test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sdlab.infra.pytest_plugin import Servers
from sdlab.infra.services import redis as redis_service
from sdlab.locks import FencedStore, LockError, LockLost, RedisLock, Redlock
from sdlab.sql import Database
from tests.helpers import Proxy


def redis_port(url: str) -> int:
    return int(url.split(":")[2].split("/")[0])


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Any]:
    client = redis_service.connect(redis_url)
    yield client
    await client.aclose()


async def test_a_cancelled_acquire_leaves_no_lock_behind(
    redis_url: str, client: Any, namespace: str
) -> None:
    async with Proxy(redis_port(redis_url), delay=0.3) as proxy:
        slow = redis_service.connect(f"redis://127.0.0.1:{proxy.port}/0")
        lock = RedisLock(slow, namespace, ttl=5)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(lock.acquire(), 0.1)  # the SET lands; the reply is late
        await asyncio.sleep(0.8)  # the undo, sent after the cancel, lands too
        assert await client.exists(f"sdlab:lock:{{{namespace}}}") == 0
        assert not lock.held
        await slow.aclose()


async def test_a_lock_past_its_ttl_is_marked_lost_on_time(client: Any, namespace: str) -> None:
    lock = RedisLock(client, namespace, ttl=0.3)
    await lock.acquire()
    assert lock.held
    await asyncio.sleep(0.4)
    assert lock.lost.is_set()
    assert not lock.held
    with pytest.raises(LockLost):
        await lock.release()


async def test_a_partitioned_holder_learns_it_lost_the_lock_within_its_ttl(
    redis_url: str, client: Any, namespace: str
) -> None:
    async with Proxy(redis_port(redis_url)) as proxy:
        far = redis_service.connect(f"redis://127.0.0.1:{proxy.port}/0")
        lock = RedisLock(far, namespace, ttl=0.6, auto_renew=True)
        await lock.acquire()
        proxy.flowing.clear()  # renewals no longer reach Redis
        await asyncio.wait_for(lock.lost.wait(), 1.0)  # at the TTL, not a socket timeout later
        assert not lock.held
        other = RedisLock(client, namespace, ttl=5, timeout=2)
        assert await other.acquire()  # the key expired: the new holder is alone
        await other.release()
        proxy.cut()
        await far.aclose()


async def test_redlock_release_with_servers_unreachable_is_not_called_lost(
    servers: Servers, namespace: str
) -> None:
    instances = servers.redis(5, durable=True)
    clients = [redis_service.connect(s.url) for s in instances]
    lock = Redlock(clients, namespace, ttl=5, timeout=1)
    await lock.acquire()
    for instance in instances[:3]:
        instance.pause()
    try:
        with pytest.raises(LockError, match="confirmed on only 2 of 5") as failure:
            await lock.release()
        assert not isinstance(failure.value, LockLost)
    finally:
        for instance in instances[:3]:
            instance.resume()
        for c in clients:
            await c.aclose()


async def test_a_cancelled_redlock_attempt_is_undone_everywhere(
    servers: Servers, namespace: str
) -> None:
    instances = servers.redis(5, durable=True)
    clients = [redis_service.connect(s.url) for s in instances]
    key = f"sdlab:lock:{{{namespace}}}"
    try:
        for instance in instances[2:]:  # a majority that will not answer before we give up
            instance.pause()
        lock = Redlock(clients, namespace, ttl=5, server_timeout=1.0)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(lock.acquire(), 0.2)
        await asyncio.sleep(0.3)
        assert [await c.exists(key) for c in clients[:2]] == [0, 0]  # both grants undone
    finally:
        for instance in instances[2:]:
            instance.resume()
        for c in clients:
            await c.aclose()


async def test_fenced_writes_are_atomic_even_on_autocommit_connections(
    mysql_db: str, namespace: str
) -> None:
    async with Database(mysql_db, min_size=4, max_size=16) as db:  # autocommit sessions
        store = FencedStore(db, "fenced")
        await store.create()
        for _ in range(10):

            async def write(token: int) -> None:
                with contextlib.suppress(LockError):  # refused: a higher token was first
                    await store.write(namespace, f"v{token}", token=token)

            base = ((await store.read(namespace)) or (0, None))[0]
            tokens = [base + i for i in range(1, 17)]
            await asyncio.gather(*(write(t) for t in tokens))
            assert await store.read(namespace) == (tokens[-1], f"v{tokens[-1]}")


@pytest.mark.parametrize("kind", ["mysql", "postgres"])
async def test_the_heartbeat_tells_a_holder_its_session_is_gone(
    kind: str, mysql_url: str, postgres_url: str, namespace: str
) -> None:
    from sdlab.locks import MariaDBLock, PostgresLock

    if kind == "mysql":
        holder: Any = MariaDBLock(mysql_url, namespace, heartbeat=0.2)
        await holder.acquire()
        async with Database(mysql_url) as admin:
            session = await admin.fetchval("SELECT IS_USED_LOCK(%s)", (namespace,))
            await admin.execute(f"KILL CONNECTION {int(session)}")  # a server-side end
    else:
        holder = PostgresLock(postgres_url, namespace, heartbeat=0.2)
        await holder.acquire()
        await asyncio.sleep(0.5)
        assert holder.held  # the heartbeat finds it still ours
        pid = holder.session.raw.info.backend_pid
        async with Database(postgres_url) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    try:
        await asyncio.wait_for(holder.lost.wait(), 2)  # told within a heartbeat or two
        assert not holder.held
        with pytest.raises(LockLost):
            await holder.release()
    finally:
        await holder.close()
