"""The server-backed generators and the machine id lease, on real servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sdlab.ids import (
    INSTAGRAM,
    BatchClient,
    CounterTable,
    MachineLease,
    NoTicketServer,
    Snowflake,
    TicketServers,
    install_instagram,
)
from sdlab.infra.pytest_plugin import Servers
from sdlab.infra.services import redis as redis_service
from sdlab.locks import LockLost
from sdlab.sql import Database


@pytest.fixture
async def counters(mysql_db: str) -> AsyncIterator[CounterTable]:
    async with Database(mysql_db, min_size=2, max_size=8) as db:
        table = CounterTable(db)
        await table.create()
        yield table


async def test_central_batches_never_overlap(counters: CounterTable) -> None:
    batches = await asyncio.gather(*(counters.allocate("orders", 100) for _ in range(20)))
    ids = [i for batch in batches for i in batch]
    assert sorted(ids) == list(range(1, 2001))
    assert (await counters.allocate("invoices", 5)) == range(1, 6)  # a counter per service
    assert (await counters.allocate("Invoices", 5)) == range(1, 6)  # names are exact
    with pytest.raises(ValueError, match="service names"):
        await counters.allocate("no spaces", 1)


async def test_the_batch_client_fetches_ahead(counters: CounterTable) -> None:
    calls: list[int] = []

    async def allocate(n: int) -> range:
        calls.append(n)
        return await counters.allocate("ahead", n)

    client = BatchClient(allocate, batch=100)
    first = [await client.next_id() for _ in range(60)]  # past half: the next batch is asked
    await asyncio.sleep(0.1)
    assert len(calls) == 2
    rest = await client.next_ids(140)
    assert first + rest == list(range(1, 201))
    await client.close()


async def test_ticket_servers_alternate_and_survive_one_down(servers: Servers) -> None:
    odd, even = servers.mariadb(2)
    tickets = TicketServers([odd.url, even.url], timeout=1)
    try:
        await tickets.create()
        made = [await tickets.next_id() for _ in range(6)]
        assert made == [1, 2, 3, 4, 5, 6]
        # Another client that lists the servers the other way round: the offsets belong
        # to the servers, so its ids still never collide with ours.
        other = TicketServers([even.url, odd.url], timeout=1)
        theirs = [await other.next_id() for _ in range(6)]
        await other.close()
        assert not set(theirs) & set(made)
        made += theirs
        even.kill()
        later = [await tickets.next_id() for _ in range(4)]
        assert all(i % 2 == 1 for i in later)  # all from the odd server now
        assert len(set(made + later)) == 16
        odd.kill()
        with pytest.raises(NoTicketServer, match="no ticket server answered"):
            await tickets.next_id()
    finally:
        await tickets.close()


async def test_instagram_ids_are_made_by_postgres(postgres_db: str) -> None:
    async with Database(postgres_db, min_size=1) as db, db.session() as session:
        await install_instagram(session, schema="shard_5", shard=5)
        await session.execute(
            "CREATE TABLE shard_5.photos (id bigint NOT NULL DEFAULT shard_5.next_id() "
            "PRIMARY KEY, caption text)"
        )
        for i in range(50):
            await session.execute("INSERT INTO shard_5.photos (caption) VALUES (%s)", (str(i),))
        rows = await session.fetch("SELECT id FROM shard_5.photos ORDER BY caption::int")
        ids = [row[0] for row in rows]
    assert len(set(ids)) == 50
    parts = INSTAGRAM.decode(ids[-1])
    assert parts.node == 5
    assert abs(parts.time - datetime.now(UTC)) < timedelta(seconds=5)
    with pytest.raises(ValueError, match="shard must be"):
        await install_instagram(None, schema="x", shard=9000)


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Any]:
    client = redis_service.connect(redis_url)
    yield client
    await client.aclose()


async def test_leases_never_share_a_machine_id(redis_client: Any, namespace: str) -> None:
    leases = [
        await MachineLease.acquire(redis_client, service=namespace, machines=8) for _ in range(8)
    ]
    assert sorted(lease.machine for lease in leases) == list(range(8))
    with pytest.raises(Exception, match="all 8 machine ids"):
        await MachineLease.acquire(redis_client, service=namespace, machines=8)
    freed = leases.pop(3)
    await freed.release()
    again = await MachineLease.acquire(redis_client, service=namespace, machines=8)
    assert again.machine == freed.machine  # the only free one
    for lease in [*leases, again]:
        await lease.release()


async def test_a_generator_stops_when_its_lease_is_gone(redis_client: Any, namespace: str) -> None:
    lease = await MachineLease.acquire(redis_client, service=namespace, ttl=5)
    ids = Snowflake(lease.check)
    assert ids.decode(ids.next_id()).node == lease.machine
    await redis_client.delete(lease.lock._keys[0])  # someone broke the lease

    async def keep_making() -> None:
        for _ in range(1000):
            await asyncio.sleep(0.01)
            ids.next_id()

    with pytest.raises(LockLost):  # found at the next renewal, then at the next millisecond
        await keep_making()


async def test_callers_racing_at_a_batch_switch_share_one_fetch(counters: CounterTable) -> None:
    calls: list[int] = []

    async def allocate(n: int) -> range:
        calls.append(n)
        await asyncio.sleep(0.05)
        return await counters.allocate("race", n)

    client = BatchClient(allocate, batch=10)
    ids = await asyncio.gather(*(client.next_id() for _ in range(10)))
    assert sorted(ids) == list(range(1, 11))
    assert len(calls) <= 2  # the first batch, and at most the prefetch of the next
    await client.close()


async def test_a_new_holder_waits_past_the_previous_holders_clock(
    redis_client: Any, namespace: str
) -> None:
    import time

    horizon = f"ids:{namespace}:machine:0:horizon"
    await redis_client.set(horizon, time.time_ns() // 1_000_000 + 200)  # 200 ms "ahead"
    began = time.monotonic()
    lease = await MachineLease.acquire(
        redis_client, service=namespace, machines=1, max_clock_skew=0.05
    )
    assert time.monotonic() - began >= 0.24
    await lease.release()
    await redis_client.set(horizon, time.time_ns() // 1_000_000 + 3_600_000)  # an hour ahead
    with pytest.raises(LockLost, match="is the clock right"):
        await MachineLease.acquire(redis_client, service=namespace, machines=1)
    assert await MachineLease.acquire(redis_client, service=f"{namespace}-2", machines=1)


async def test_a_hung_ticket_server_costs_one_timeout(servers: Servers) -> None:
    import time

    a, b = servers.mariadb(2)
    tickets = TicketServers([a.url, b.url], timeout=0.5)
    try:
        await tickets.create()
        await tickets.next_id()
        a.pause()  # SIGSTOP: connections stay open, nothing answers
        began = time.monotonic()
        made = [await tickets.next_id() for _ in range(6)]
        assert time.monotonic() - began < 2  # one timeout, then it is left out a while
        assert all(i % 2 == 0 for i in made)
    finally:
        a.resume()
        await tickets.close()
