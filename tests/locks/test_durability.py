"""What a lock keeps across restarts and time: Redlock's persistence check, servers
restarted under a held lock, renewal, and fencing counters that expire."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.exceptions import ConnectionError

from sdlab.infra.instance import Instances
from sdlab.infra.pytest_plugin import Servers
from sdlab.infra.services import redis as redis_service
from sdlab.locks import LockLost, NotDurable, RedisLock, Redlock
from sdlab.locks.redis_lock import FENCE_LIFE

Quorum = tuple[Instances, list[Any]]


async def _quorum(instances: Instances) -> AsyncIterator[Quorum]:
    clients = [redis_service.connect(s.url) for s in instances]
    yield instances, clients
    for client in clients:
        await client.aclose()


@pytest.fixture
async def scratch(servers: Servers) -> AsyncIterator[Quorum]:
    """Five Redis servers as `infra.redis(5)` makes them: no persistence."""
    async for quorum in _quorum(servers.redis(5)):
        yield quorum


@pytest.fixture
async def durable(servers: Servers) -> AsyncIterator[Quorum]:
    async for quorum in _quorum(servers.redis(5, durable=True)):
        yield quorum


async def _restart(instances: Instances, clients: list[Any], how: Callable[[Any], None]) -> None:
    for instance in instances:
        await asyncio.to_thread(how, instance)
        await asyncio.to_thread(instance.start)
    for client in clients:  # reconnect now, not inside a lock's server_timeout
        with contextlib.suppress(ConnectionError):
            await client.ping()  # the pooled connection was closed by the restart
        await client.ping()


async def test_redlock_refuses_servers_without_persistence_and_says_what_to_set(
    scratch: Quorum, namespace: str
) -> None:
    _, clients = scratch
    lock = Redlock(clients, namespace, ttl=5, timeout=1, server_timeout=1)
    with pytest.raises(NotDurable) as refused:
        await lock.acquire()
    message = str(refused.value)
    assert "appendonly no" in message
    assert "`appendonly yes` and `appendfsync always`" in message
    assert "durable=True" in message
    assert "unsafe_without_persistence=True" in message
    assert not lock.held
    await asyncio.sleep(0.1)  # what a server granted before another refused is undone
    for client in clients:
        assert await client.exists(f"sdlab:lock:{{{namespace}}}") == 0
    risky = Redlock(clients, namespace, ttl=5, timeout=1, unsafe_without_persistence=True)
    async with risky:
        assert risky.held


async def test_restarting_three_of_five_servers_without_persistence_gives_two_holders(
    scratch: Quorum, namespace: str
) -> None:
    """The reason for the check. The fencing token still grows (a forgotten counter
    starts again from the server's clock), so a fenced resource refuses the first."""
    instances, clients = scratch
    first = Redlock(clients, namespace, ttl=30, unsafe_without_persistence=True)
    assert await first.acquire()
    await _restart(instances[:3], clients[:3], lambda instance: instance.stop())
    second = Redlock(clients, namespace, ttl=30, timeout=2, unsafe_without_persistence=True)
    assert await second.acquire()  # the restarted majority forgot the first holder
    assert first.held
    assert second.held
    assert first.fence is not None
    assert second.fence is not None
    assert second.fence > first.fence
    await second.release()


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_durable_servers_restarted_keep_the_lock_and_the_fence_never_goes_back(
    durable: Quorum, namespace: str, how: str
) -> None:
    instances, clients = durable
    fences: list[int] = []
    for majority in (instances[:3], instances[2:], instances[1:4]):
        first = Redlock(clients, namespace, ttl=30)
        assert await first.acquire()
        assert first.fence is not None
        fences.append(first.fence)
        await _restart(majority, clients, lambda i: getattr(i, how)())  # a crash if "kill"
        second = Redlock(clients, namespace, ttl=30, timeout=0.3)
        assert not await second.acquire()  # the restarted servers still know the holder
        await first.release()
        async with second:
            assert second.fence is not None
            fences.append(second.fence)
    assert fences == sorted(fences)
    assert len(set(fences)) == len(fences)


async def test_redlock_auto_renew_keeps_it_past_its_ttl_and_reports_a_loss(
    durable: Quorum, namespace: str
) -> None:
    _, clients = durable
    # TTLs of a second, waits of a few: a renewal that is late on a loaded machine is
    # not what this test is about.
    async with Redlock(clients, namespace, ttl=1.0, auto_renew=True) as lock:
        await asyncio.sleep(3.5)  # over three TTLs
        assert lock.held
        assert not await Redlock(clients, namespace, ttl=5).acquire(blocking=False)

    async def hold() -> None:
        key = f"sdlab:lock:{{{namespace}}}"
        async with Redlock(clients, namespace, ttl=1.0, auto_renew=True) as lock:
            # The acquisition was decided by the first majority; the other servers' grants
            # may still be on their way. Let them land first, or one landing after the
            # deletes below would give the lock its majority back (rightly).
            for _ in range(250):
                if all([await client.exists(key) for client in clients]):
                    break
                await asyncio.sleep(0.02)
            for client in clients[:3]:  # an operator's FLUSH on a majority, say
                await client.delete(key)
            await asyncio.wait_for(lock.lost.wait(), 5.0)
            assert not lock.held

    with pytest.raises(LockLost, match="still held it at release"):
        await hold()


async def test_redlock_without_renewal_is_marked_lost_at_its_ttl(
    durable: Quorum, namespace: str
) -> None:
    _, clients = durable
    lock = Redlock(clients, namespace, ttl=0.5)
    await lock.acquire()
    await asyncio.wait_for(lock.lost.wait(), 5.0)
    assert not lock.held


async def test_fencing_counters_expire_and_a_new_one_starts_past_the_old_tokens(
    redis: Any, durable: Quorum, namespace: str
) -> None:
    fence_key = f"sdlab:lock:{{{namespace}}}:fence"
    lock = RedisLock(redis, namespace, ttl=5)
    async with lock:
        first = lock.fence
    assert first is not None
    assert 0 < await redis.pttl(fence_key) <= FENCE_LIFE * 1000
    await redis.delete(fence_key)  # what the expiry does after a day unused
    async with lock:
        assert lock.fence is not None
        assert lock.fence > first
    _, clients = durable
    async with Redlock(clients, namespace, ttl=5):
        pass
    await asyncio.sleep(0.1)  # the stragglers' fences are raised in the background
    for client in clients:
        assert 0 < await client.pttl(fence_key) <= FENCE_LIFE * 1000
