"""Races and edge cases found in review: each test failed before its fix."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sdlab.pool import MariaDB, Pool, PoolClosed, PoolTimeout, PostgreSQL
from tests.helpers import Proxy


@pytest.fixture
async def black_hole(mysql_url: str) -> AsyncIterator[tuple[Proxy, str]]:
    port = int(mysql_url.rsplit(":", 1)[1].strip("/"))
    async with Proxy(port) as proxy:
        yield proxy, f"mysql://root@127.0.0.1:{proxy.port}/"


async def test_the_postgres_idle_check_opens_no_transaction(postgres_url: str) -> None:
    async with Pool(PostgreSQL(postgres_url), min_size=1, check_idle=0.05) as pool:
        await asyncio.sleep(0.1)
        async with pool.connection() as conn:  # pinged on the way out
            assert conn.info.transaction_status.name == "IDLE"
            async with conn.transaction():
                await conn.execute("CREATE TEMPORARY TABLE kept (x int)")
            cur = await conn.execute("SELECT count(*) FROM pg_class WHERE relname = 'kept'")
            assert await cur.fetchone() == (1,)
            await conn.commit()
        await pool.check()
        assert pool.stats()["returns_rolled_back"] == 0


async def test_a_request_never_queues_behind_a_waiter_that_gave_up(mysql_url: str) -> None:
    async with Pool(MariaDB(mysql_url), min_size=1, timeout=5) as pool:
        conn = await pool.getconn()
        quitter = asyncio.create_task(pool.getconn())
        await asyncio.sleep(0.05)
        quitter.cancel()  # not yet run: the pool still counts it as waiting
        await pool.putconn(conn)
        newcomer = await pool.getconn(timeout=1)
        await pool.putconn(newcomer)
        await asyncio.gather(quitter, return_exceptions=True)


async def test_a_cancel_during_the_rollback_on_return_is_not_swallowed(postgres_url: str) -> None:
    rolling_back = asyncio.Event()

    class Traced(PostgreSQL):
        async def rollback(self, conn: Any) -> None:
            rolling_back.set()
            await super().rollback(conn)

    async def worker(pool: Pool[Any]) -> None:
        async with pool.connection() as conn:
            await conn.execute("SELECT 1")  # leaves a transaction open
        await asyncio.sleep(1)  # must never get here

    async with Pool(Traced(postgres_url), min_size=1) as pool:
        task = asyncio.create_task(worker(pool))
        await rolling_back.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stats = pool.stats()
        assert stats["connections_lost"] == 1  # half rolled back: not lent again
        assert stats["in_use"] == 0


async def test_check_is_safe_to_cancel_and_to_race_with_close(postgres_url: str) -> None:
    pinging = asyncio.Event()

    class Slow(PostgreSQL):
        async def check(self, conn: Any) -> None:
            pinging.set()
            await asyncio.sleep(0.05)
            await super().check(conn)

    pool = Pool(Slow(postgres_url), min_size=1, check_idle=None)
    await pool.open()
    task = asyncio.create_task(pool.check())
    await pinging.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert pool.stats()["in_use"] == 0
    began = time.monotonic()
    await pool.close(timeout=2)
    assert time.monotonic() - began < 1  # nothing lent, nothing to wait for

    pinging.clear()
    pool = Pool(Slow(postgres_url), min_size=1, check_idle=None)
    await pool.open()
    (slot,) = pool._idle
    task = asyncio.create_task(pool.check())
    await pinging.wait()
    await pool.close()
    await task
    assert not pool._idle
    await asyncio.sleep(0.1)
    assert slot.conn.closed


async def test_a_connection_given_back_after_close_gave_up_on_it(postgres_url: str) -> None:
    pool = Pool(PostgreSQL(postgres_url), min_size=1)
    await pool.open()
    conn = await pool.getconn()
    await pool.close(timeout=0.1)  # closes it under its user
    await pool.putconn(conn)  # no error: the pool knows it closed it
    assert conn.closed


async def test_configure_must_not_leave_a_transaction_open(postgres_url: str) -> None:
    async def configure(conn: Any) -> None:
        await conn.execute("SET TIME ZONE 'UTC'")  # autocommit off: opens a transaction

    pool = Pool(PostgreSQL(postgres_url), min_size=0, max_size=1, configure=configure)
    try:
        with pytest.raises(PoolTimeout, match="configure\\(\\) left the connection inside"):
            await pool.getconn(timeout=0.5)
    finally:
        await pool.close()


async def test_the_acquire_timeout_covers_the_idle_check(black_hole: tuple[Proxy, str]) -> None:
    proxy, url = black_hole
    pool = Pool(MariaDB(url), min_size=1, check_idle=0.1, reconnect_timeout=1)
    await pool.open()
    await asyncio.sleep(0.2)
    proxy.flowing.clear()  # the idle connection's ping will never be answered
    began = time.monotonic()
    with pytest.raises(PoolTimeout):
        await pool.getconn(timeout=0.5)
    assert time.monotonic() - began < 2
    assert pool.stats()["connections_lost"] == 1
    await pool.close(timeout=0.1)


async def test_close_during_an_idle_check_fails_the_request_at_once(
    black_hole: tuple[Proxy, str],
) -> None:
    proxy, url = black_hole
    pool = Pool(MariaDB(url), min_size=1, check_idle=0.1, timeout=5)
    await pool.open()
    await asyncio.sleep(0.2)
    proxy.flowing.clear()
    began = time.monotonic()
    request = asyncio.create_task(pool.getconn())
    await asyncio.sleep(0.2)  # the request is inside the ping
    closing = asyncio.create_task(pool.close())
    await asyncio.sleep(0.1)
    proxy.cut()  # the ping fails
    with pytest.raises(PoolClosed):
        await request
    await closing
    assert time.monotonic() - began < 2


async def test_resize_down_while_connections_open_keeps_to_max_size(postgres_url: str) -> None:
    pool = Pool(PostgreSQL(postgres_url), min_size=4, max_size=8)
    await pool.open(wait=False)  # four connections on their way
    await pool.resize(1, 1)
    await asyncio.sleep(1)
    assert pool.stats()["size"] == 1
    conn = await pool.getconn()
    with pytest.raises(PoolTimeout):
        await pool.getconn(timeout=0.2)
    await pool.putconn(conn)
    await pool.close()


async def test_stats_are_read_only_and_count_timed_out_waits(postgres_url: str) -> None:
    async with Pool(PostgreSQL(postgres_url), min_size=1) as pool:
        for _ in range(3):
            async with pool.connection():
                pass
        assert pool.stats() == pool.stats()
        held = await pool.getconn()
        for _ in range(3):
            with pytest.raises(PoolTimeout):
                await pool.getconn(timeout=0.1)
        stats = pool.stats()
        await pool.putconn(held)
    assert stats["requests_timeouts"] == 3
    assert stats["wait_ms_p99"] >= 100  # the timed-out requests waited their 0.1 s
    assert stats["wait_ms_p50"] == 0.0  # 4 of the 7 did not wait at all


async def test_reset_runs_on_every_return_and_a_failure_discards(mysql_url: str) -> None:
    resets = 0

    async def reset(conn: Any) -> None:
        nonlocal resets
        resets += 1
        if resets == 2:
            raise RuntimeError("reset failed")
        async with conn.cursor() as cur:
            await cur.execute("SET @leftover = NULL")

    async with Pool(MariaDB(mysql_url), min_size=1, reset=reset) as pool:
        async with pool.connection() as conn, conn.cursor() as cur:
            await cur.execute("SET @leftover = 'secret'")
        async with pool.connection() as conn, conn.cursor() as cur:
            await cur.execute("SELECT @leftover")
            assert await cur.fetchone() == (None,)
        stats = pool.stats()
    assert resets == 2
    assert stats["connections_lost"] == 1
