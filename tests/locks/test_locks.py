"""Each lock on its real server: exclusion, ownership, expiry, renewal, errors."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sdlab.infra.services import redis as redis_service
from sdlab.locks import (
    LockError,
    LockLost,
    LockTimeout,
    MariaDBLock,
    PostgresLock,
    RedisLock,
)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Any]:
    client = redis_service.connect(redis_url)
    yield client
    await client.aclose()


async def test_one_holder_at_a_time_and_fences_grow(client: Any, namespace: str) -> None:
    first = RedisLock(client, namespace, ttl=5)
    second = RedisLock(client, namespace, ttl=5, timeout=0.1)
    assert await first.acquire()
    assert not await second.acquire()
    assert not await second.acquire(blocking=False)
    await first.release()
    assert await second.acquire()
    assert first.fence is None
    assert second.fence is not None
    fence = second.fence
    await second.release()
    async with first:
        assert first.fence == fence + 1


async def test_a_timeout_says_which_lock(client: Any, namespace: str) -> None:
    async with RedisLock(client, namespace):
        began = time.monotonic()
        with pytest.raises(LockTimeout, match=rf"lock '{namespace}' was not acquired within 0.2 s"):
            async with RedisLock(client, namespace, timeout=0.2):
                pass
        assert 0.2 <= time.monotonic() - began < 1.0


async def test_only_the_owner_releases_and_an_expired_holder_learns_it(
    client: Any, namespace: str
) -> None:
    stalled = RedisLock(client, namespace, ttl=0.2)
    await stalled.acquire()
    await asyncio.sleep(0.3)  # the TTL runs out while the holder "stalls"
    current = RedisLock(client, namespace, ttl=5, timeout=1)
    await current.acquire()
    with pytest.raises(LockLost, match="had expired or changed hands before release"):
        await stalled.release()
    with pytest.raises(LockError, match="is not held"):
        await stalled.extend()
    assert not await RedisLock(client, namespace).acquire(blocking=False)  # still current's
    await current.release()


async def test_extend_and_auto_renew_keep_a_lock_past_its_ttl(client: Any, namespace: str) -> None:
    lock = RedisLock(client, namespace, ttl=0.3)
    await lock.acquire()
    await asyncio.sleep(0.2)
    await lock.extend(1.0)
    await asyncio.sleep(0.3)
    await lock.release()  # would raise LockLost had it expired

    async with RedisLock(client, namespace, ttl=0.3, auto_renew=True):
        await asyncio.sleep(1.0)  # over three TTLs
        assert not await RedisLock(client, namespace).acquire(blocking=False)


async def test_auto_renew_reports_a_lock_taken_away(client: Any, namespace: str) -> None:
    async def hold() -> None:
        async with RedisLock(client, namespace, ttl=0.3, auto_renew=True):
            await client.delete(f"sdlab:lock:{{{namespace}}}")  # an operator's FLUSH, say
            await asyncio.sleep(0.5)

    with pytest.raises(LockLost, match="changed hands"):
        await hold()


async def test_bad_arguments_are_refused(client: Any) -> None:
    with pytest.raises(ValueError, match="ttl must be positive"):
        RedisLock(client, "x", ttl=0)
    with pytest.raises(ValueError, match="needs a name"):
        RedisLock(client, "")
    with pytest.raises(ValueError, match="at most 64 characters"):
        MariaDBLock("mysql://root@127.0.0.1:3306/", "x" * 65)
    lock = RedisLock(client, "never-taken")
    with pytest.raises(LockError, match="not held"):
        await lock.release()


@pytest.mark.parametrize("kind", ["mysql", "postgres"])
async def test_database_locks(kind: str, mysql_url: str, postgres_url: str, namespace: str) -> None:
    make = (
        (lambda: MariaDBLock(mysql_url, namespace))
        if kind == "mysql"
        else (lambda: PostgresLock(postgres_url, namespace))
    )
    first, second = make(), make()
    try:
        assert await first.acquire()
        began = time.monotonic()
        assert not await second.acquire(timeout=0.3)  # waits in the server
        assert 0.25 <= time.monotonic() - began < 2.0
        assert not await second.acquire(blocking=False)
        waiter = asyncio.create_task(second.acquire(timeout=math.inf))
        await asyncio.sleep(0.1)
        await first.close()  # the holder's session ends: the lock is freed at once
        assert await asyncio.wait_for(waiter, 5)
        third = make()
        third.timeout = 0.1
        with pytest.raises(LockTimeout, match=r"not acquired within 0\.1 s"):
            await third.__aenter__()
        await third.close()
        await second.release()
        with pytest.raises(LockError, match="not held"):
            await second.release()
    finally:
        await first.close()
        await second.close()


async def test_a_cancelled_database_wait_does_not_leave_the_lock_taken(
    mysql_url: str, namespace: str
) -> None:
    holder, waiter = MariaDBLock(mysql_url, namespace), MariaDBLock(mysql_url, namespace)
    try:
        await holder.acquire()
        task = asyncio.create_task(waiter.acquire(timeout=math.inf))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await holder.release()
        # The cancelled waiter's session was dropped: it cannot have been granted it.
        assert await holder.acquire(timeout=2)
    finally:
        await holder.close()
        await waiter.close()
