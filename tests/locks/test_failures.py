"""Locks under failure, with real processes and real servers: many processes, dead
Redis servers, a holder frozen past its TTL."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sdlab.infra.pytest_plugin import Servers
from sdlab.infra.services import redis as redis_service
from sdlab.locks import FencedStore, LockTimeout, RedisLock, Redlock, StaleToken, demo
from sdlab.sql import Database


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["redis", "redlock", "mysql", "postgres"])
def test_eight_processes_never_lose_an_increment(
    backend: str, redis_url: str, mysql_url: str, postgres_url: str, servers: Servers
) -> None:
    quorum = [s.url for s in servers.redis(5, durable=True)] if backend == "redlock" else []
    setup = demo.Setup(backend, redis_url, quorum, mysql_url, postgres_url)
    tally = demo.run(setup, processes=8, increments=500)
    assert tally.counted == 4000


@pytest.fixture
async def quorum(servers: Servers) -> AsyncIterator[tuple[Any, list[Any]]]:
    instances = servers.redis(5, durable=True)
    clients = [redis_service.connect(s.url) for s in instances]
    yield instances, clients
    for client in clients:
        await client.aclose()


async def test_redlock_survives_two_dead_servers_but_not_three(
    quorum: tuple[Any, list[Any]], namespace: str
) -> None:
    instances, clients = quorum
    lock = Redlock(clients, namespace, ttl=5, timeout=0.5)
    async with lock:
        first = lock.fence
    instances[0].kill()
    instances[1].kill()
    async with lock:
        assert lock.fence is not None
        assert first is not None
        assert lock.fence > first
    instances[2].kill()
    with pytest.raises(LockTimeout) as failure:
        await lock.__aenter__()
    # Decided once three refused: the fourth and fifth may not have answered by then.
    assert re.search(r"[0-2] of 5 granted \(quorum 3\)", str(failure.value))
    assert "Connection refused" in str(failure.value) or "Error 111" in str(failure.value)
    assert not lock.held
    for client in clients[3:]:  # those that granted were released: nobody holds it
        for _ in range(100):  # a late grant is undone in the background
            if await client.exists(f"sdlab:lock:{{{namespace}}}") == 0:
                break
            await asyncio.sleep(0.02)
        assert await client.exists(f"sdlab:lock:{{{namespace}}}") == 0


async def test_a_frozen_minority_costs_redlock_nothing(
    quorum: tuple[Any, list[Any]], namespace: str
) -> None:
    """Two of five servers paused (SIGSTOP): they never answer, yet acquire, extend and
    release are decided by the three that do, without waiting out server_timeout."""
    instances, clients = quorum
    instances[0].pause()
    instances[1].pause()
    try:
        lock = Redlock(clients, namespace, ttl=5, server_timeout=30)
        async with asyncio.timeout(10):  # far below the 30 s a frozen server could cost
            for _ in range(3):
                assert await lock.acquire()
                await lock.extend()
                await lock.release()
        for client in clients[2:]:
            assert await client.exists(f"sdlab:lock:{{{namespace}}}") == 0
    finally:
        instances[0].resume()
        instances[1].resume()


async def test_a_frozen_majority_still_refuses(
    quorum: tuple[Any, list[Any]], namespace: str
) -> None:
    instances, clients = quorum
    for instance in instances[:3]:
        instance.pause()
    try:
        lock = Redlock(clients, namespace, ttl=5, timeout=0.3, server_timeout=0.1)
        with pytest.raises(LockTimeout) as failure:
            await lock.__aenter__()
        assert "no answer within 0.1 s" in str(failure.value)
        assert not lock.held
    finally:
        for instance in instances[:3]:
            instance.resume()
    for client in clients[3:]:  # what the two live ones granted was undone
        assert await client.exists(f"sdlab:lock:{{{namespace}}}") == 0


async def test_redlock_fences_grow_even_when_servers_disagree(
    quorum: tuple[Any, list[Any]], namespace: str
) -> None:
    _, clients = quorum
    fence_key = f"sdlab:lock:{{{namespace}}}:fence"
    await clients[0].set(fence_key, 5 * 10**15)  # one server's counter far ahead of the rest
    lock = Redlock(clients, namespace, ttl=5, timeout=1)
    async with lock:
        first = lock.fence
    assert first is not None
    for client in clients:  # the majority at once, late grants in the background
        for _ in range(100):
            if int(await client.get(fence_key)) >= first:
                break
            await asyncio.sleep(0.02)
        assert int(await client.get(fence_key)) >= first
    await clients[0].delete(fence_key)  # even if the server that was ahead forgets
    async with lock:
        assert lock.fence is not None
        assert lock.fence > first


@pytest.mark.slow
async def test_a_holder_frozen_past_its_ttl_is_refused_by_the_fence(
    redis_url: str, mysql_db: str, namespace: str
) -> None:
    holder = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).with_name("holder.py")), redis_url, mysql_db,
        namespace, "fenced", stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert holder.stdin is not None
    assert holder.stdout is not None
    client = redis_service.connect(redis_url)
    try:
        async with Database(mysql_db, min_size=1) as db:
            store = FencedStore(db, "fenced")
            await store.create()
            stale_fence = int(await holder.stdout.readline())
            os.kill(holder.pid, signal.SIGSTOP)  # a GC pause, a swap storm, a VM migration
            async with RedisLock(client, namespace, ttl=5, timeout=3) as lock:
                fence = lock.fence
                assert fence is not None
                assert fence > stale_fence
                await store.write(namespace, "written by the second holder", token=fence)
            os.kill(holder.pid, signal.SIGCONT)
            holder.stdin.write(b"go on\n")
            await holder.stdin.drain()
            answer = (await holder.stdout.readline()).decode()
            assert answer.startswith("refused:"), answer
            assert f"token {stale_fence} belongs to an earlier holder" in answer
            assert await store.read(namespace) == (fence, "written by the second holder")
            with pytest.raises(StaleToken):
                await store.write(namespace, "late", token=stale_fence)
    finally:
        if holder.returncode is None:
            holder.kill()
        await holder.wait()
        await client.aclose()
