"""The pool against real MariaDB and PostgreSQL servers."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from sdlab.pool import (
    Factory,
    MariaDB,
    Pool,
    PoolClosed,
    PoolError,
    PoolTimeout,
    PostgreSQL,
    TooManyRequests,
)


async def one(conn: Any, sql: str) -> Any:
    async with conn.cursor() as cur:
        await cur.execute(sql)
        return await cur.fetchall()


async def connection_id(conn: Any) -> int:
    ((cid,),) = await one(conn, "SELECT CONNECTION_ID()")
    return int(cid)


async def test_a_connection_is_reused(mysql_url: str) -> None:
    async with Pool(MariaDB(mysql_url), min_size=1, name="reuse") as pool:
        async with pool.connection() as conn:
            first = await connection_id(conn)
        async with pool.connection() as conn:
            assert await connection_id(conn) == first
        assert pool.stats()["connections_opened"] == 1


async def test_stats_count_waits_and_usage(mysql_url: str) -> None:
    async with Pool(MariaDB(mysql_url), min_size=1, name="counted") as pool:
        for _ in range(8):  # served at once: an idle connection is there
            async with pool.connection():
                pass
        held = await pool.getconn()
        waiter = asyncio.create_task(pool.getconn())
        await asyncio.sleep(0.2)
        assert pool.stats()["waiting"] == 1
        await pool.putconn(held)  # handed straight to the waiter, 0.2 s later
        await pool.putconn(await waiter)
        stats = pool.stats()
    assert stats["requests"] == 10
    assert stats["requests_queued"] == 1
    assert stats["wait_ms_p50"] < 1  # 9 of 10 did not wait
    assert 200 <= stats["wait_ms_max"] < 1000
    assert 200 <= stats["usage_ms_max"] < 1000  # `held` was held while the waiter waited
    assert stats["usage_ms_mean"] < stats["usage_ms_max"] / 5
    assert stats["in_use"] == 0
    assert stats["idle"] == 1


async def test_acquire_timeout_names_the_pool_and_its_state(mysql_url: str) -> None:
    async with Pool(MariaDB(mysql_url), min_size=1, name="tiny", timeout=0.2) as pool:
        held = await pool.getconn()
        with pytest.raises(PoolTimeout) as timeout:
            await pool.getconn()
        message = str(timeout.value)
        assert "pool 'tiny'" in message
        assert "no connection within 0.2 s" in message
        assert "size 1 of 1, 0 idle, 1 in use, 1 waiting" in message
        await pool.putconn(held)
        assert pool.stats()["requests_timeouts"] == 1
        async with pool.connection() as conn:  # the pool still works
            assert await one(conn, "SELECT 1") == ((1,),)


async def test_a_timeout_while_the_server_is_down_says_why(unused_port: int) -> None:
    pool = Pool(
        MariaDB(f"mysql://root@127.0.0.1:{unused_port}/"),
        min_size=0,
        max_size=1,
        timeout=0.5,
        name="nowhere",
    )
    try:
        with pytest.raises(PoolTimeout, match=r"last attempt to connect failed .* Can't connect"):
            await pool.getconn()
        assert pool.stats()["connections_failed"] >= 2  # it retried with backoff
    finally:
        await pool.close()


async def test_a_leaked_connection_is_reported_with_the_takers_stack(
    mysql_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def forgetful_handler(pool: Pool[Any]) -> Any:
        return await pool.getconn()

    async with Pool(MariaDB(mysql_url), min_size=1, leak_threshold=0.1, name="leaky") as pool:
        with caplog.at_level(logging.WARNING, logger="sdlab.pool"):
            conn = await forgetful_handler(pool)
            await asyncio.sleep(0.3)
        await pool.putconn(conn)
        assert pool.stats()["leaks_suspected"] == 1
    (record,) = [r for r in caplog.records if "held for more than 0.1 s" in r.getMessage()]
    assert "pool 'leaky'" in record.getMessage()
    assert "forgetful_handler" in record.getMessage()  # where it was taken


async def test_a_connection_given_back_in_time_is_not_reported(
    mysql_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with Pool(MariaDB(mysql_url), min_size=1, leak_threshold=0.2) as pool:
        with caplog.at_level(logging.WARNING, logger="sdlab.pool"):
            async with pool.connection():
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
        assert pool.stats()["leaks_suspected"] == 0
    assert not [r for r in caplog.records if "held for more" in r.getMessage()]


async def test_max_lifetime_recycles_connections(mysql_url: str) -> None:
    async with Pool(MariaDB(mysql_url), min_size=2, max_lifetime=0.3, name="short") as pool:
        async with pool.connection() as conn:
            before = await connection_id(conn)
        await asyncio.sleep(0.6)
        async with pool.connection() as conn:
            after = await connection_id(conn)
        assert after != before
        stats = pool.stats()
        assert stats["connections_recycled"] >= 2
        assert stats["size"] == 2


async def test_a_dirty_return_is_rolled_back(mysql_db: str) -> None:
    async with Pool(MariaDB(mysql_db), min_size=1, name="dirty") as pool:
        async with pool.connection() as conn:
            await one(conn, "CREATE TABLE t (x INT) ENGINE=InnoDB")
        async with pool.connection() as conn:
            await conn.begin()
            await one(conn, "INSERT INTO t VALUES (1)")
            assert conn.get_transaction_status()
            # the block ends without commit or rollback
        async with pool.connection() as conn:
            assert not conn.get_transaction_status()  # the next user gets it clean
            assert await one(conn, "SELECT COUNT(*) FROM t") == ((0,),)
        # With autocommit off, that SELECT opened a transaction too: rolled back as well.
        assert pool.stats()["returns_rolled_back"] == 2


async def test_an_exception_in_the_block_rolls_back(mysql_db: str) -> None:
    async with Pool(MariaDB(mysql_db), min_size=1) as pool:
        async with pool.connection() as conn:
            await one(conn, "CREATE TABLE t (x INT) ENGINE=InnoDB")

        async def fails_mid_transaction() -> None:
            async with pool.connection() as conn:
                await conn.begin()
                await one(conn, "INSERT INTO t VALUES (1)")
                raise ZeroDivisionError

        with pytest.raises(ZeroDivisionError):
            await fails_mid_transaction()
        async with pool.connection() as conn:
            assert await one(conn, "SELECT COUNT(*) FROM t") == ((0,),)


async def test_a_connection_killed_by_the_server_is_replaced(mysql_url: str) -> None:
    async with Pool(MariaDB(mysql_url), min_size=1, check_idle=0, name="killed") as pool:
        async with pool.connection() as conn:
            victim = await connection_id(conn)
        admin = await MariaDB(mysql_url).connect()
        await one(admin, f"KILL {victim}")
        await admin.ensure_closed()
        async with pool.connection() as conn:  # the ping on checkout finds it dead
            assert await connection_id(conn) != victim
        assert pool.stats()["connections_lost"] == 1


async def test_waiters_are_served_first_come_first_served(mysql_url: str) -> None:
    async with Pool(MariaDB(mysql_url), min_size=1, name="fifo") as pool:
        held = await pool.getconn()
        served: list[int] = []

        async def waiter(i: int) -> None:
            async with pool.connection():
                served.append(i)
                await asyncio.sleep(0.001)

        tasks = []
        for i in range(20):
            tasks.append(asyncio.create_task(waiter(i)))
            await asyncio.sleep(0.001)  # arrive in order
        await pool.putconn(held)
        await asyncio.gather(*tasks)
        assert served == list(range(20))


async def test_it_grows_under_load_and_shrinks_after_max_idle(mysql_url: str) -> None:
    async with Pool(MariaDB(mysql_url), min_size=1, max_size=5, max_idle=0.3) as pool:

        async def busy() -> None:
            async with pool.connection() as conn:
                await one(conn, "SELECT SLEEP(0.05)")

        await asyncio.gather(*(busy() for _ in range(20)))
        assert pool.stats()["connections_opened"] == 5
        assert pool.size == 5
        await asyncio.sleep(0.8)
        assert pool.size == 1
        assert pool.stats()["connections_idled_out"] == 4


async def test_resize(mysql_url: str) -> None:
    async with Pool(MariaDB(mysql_url), min_size=2) as pool:
        await pool.resize(4)
        await pool.open(wait=True)  # waits until the new minimum is open
        assert pool.stats()["idle"] == 4
        await pool.resize(1, 1)
        assert pool.size == 1
        with pytest.raises(ValueError, match="min_size"):
            await pool.resize(3, 2)


async def test_every_connection_closed_while_open_is_counted_with_its_reason(
    mysql_url: str,
) -> None:
    async with Pool(MariaDB(mysql_url), min_size=3) as pool:
        held = [await pool.getconn(), await pool.getconn()]  # the third stays idle
        await pool.resize(1, 1)  # the idle one closes now, one held one when it comes back
        for conn in held:
            await pool.putconn(conn)
        await asyncio.sleep(0)  # the closes run in the background: let them start
        stats = pool.stats()
        assert (stats["size"], stats["connections_shrunk"]) == (1, 2)
        reasons = ("lost", "recycled", "idled_out", "shrunk")
        assert stats["connections_closed"] == sum(stats[f"connections_{r}"] for r in reasons)


async def test_close_drains_then_refuses(mysql_url: str) -> None:
    pool = Pool(MariaDB(mysql_url), min_size=1, timeout=5)
    await pool.open()
    held = await pool.getconn()
    waiter = asyncio.create_task(pool.getconn())
    await asyncio.sleep(0.05)

    async def give_back_later() -> None:
        await asyncio.sleep(0.1)
        await pool.putconn(held)

    returner = asyncio.create_task(give_back_later())
    await pool.close(timeout=2)
    await returner
    with pytest.raises(PoolClosed):
        await waiter
    with pytest.raises(PoolClosed):
        await pool.getconn()
    assert not held.connected  # it was closed once it came back
    assert pool.stats()["size"] == 0


async def test_close_does_not_wait_forever_for_a_leak(mysql_url: str) -> None:
    pool = Pool(MariaDB(mysql_url), min_size=1)
    await pool.open()
    leaked = await pool.getconn()
    await pool.close(timeout=0.1)
    assert not leaked.connected


async def test_a_cancelled_waiter_loses_no_connection(mysql_url: str) -> None:
    async with Pool(MariaDB(mysql_url), min_size=1, max_size=1) as pool:
        held = await pool.getconn()
        waiters = [asyncio.create_task(pool.getconn()) for _ in range(5)]
        await asyncio.sleep(0.01)
        for task in waiters:
            task.cancel()
        await pool.putconn(held)
        await asyncio.gather(*waiters, return_exceptions=True)
        stats = pool.stats()
        assert (stats["size"], stats["idle"], stats["waiting"]) == (1, 1, 0)
        async with pool.connection(timeout=1):
            pass


async def test_max_waiting(mysql_url: str) -> None:
    async with Pool(MariaDB(mysql_url), min_size=1, max_waiting=2) as pool:
        held = await pool.getconn()

        async def use() -> None:
            async with pool.connection():
                pass

        waiters = [asyncio.create_task(use()) for _ in range(2)]
        await asyncio.sleep(0.01)
        with pytest.raises(TooManyRequests, match="max_waiting=2"):
            await pool.getconn()
        await pool.putconn(held)
        await asyncio.gather(*waiters)


async def test_giving_back_twice_or_a_stranger_is_an_error(mysql_url: str) -> None:
    async with Pool(MariaDB(mysql_url), min_size=1) as pool:
        conn = await pool.getconn()
        await pool.putconn(conn)
        with pytest.raises(PoolError, match="already given back"):
            await pool.putconn(conn)
        stranger = await MariaDB(mysql_url).connect()
        with pytest.raises(PoolError):
            await pool.putconn(stranger)
        await stranger.ensure_closed()


@pytest.mark.parametrize(
    "kwargs", [{"min_size": 3, "max_size": 2}, {"min_size": -1}, {"timeout": 0}]
)
def test_bad_sizes_and_timeouts_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"must|need"):
        Pool(Factory(asyncio.sleep), **kwargs)


async def test_postgres_failed_transaction_is_rolled_back(postgres_url: str) -> None:
    async with Pool(PostgreSQL(postgres_url), min_size=1) as pool:
        async with pool.connection() as conn:
            with pytest.raises(Exception, match="division by zero"):
                await conn.execute("SELECT 1 / 0")  # leaves the transaction INERROR
        async with pool.connection() as conn:
            assert conn.info.transaction_status.name == "IDLE"  # not INERROR any more
            assert (await (await conn.execute("SELECT 1")).fetchone()) == (1,)
        assert pool.stats()["returns_rolled_back"] == 2  # the INERROR one, then the SELECT


async def test_any_async_factory_can_be_pooled() -> None:
    class Thing:
        made = 0

        def __init__(self) -> None:
            Thing.made += 1
            self.closed = False

        async def aclose(self) -> None:
            self.closed = True

    async def make() -> Thing:
        return Thing()

    pool: Pool[Thing] = Pool(make, min_size=2, max_size=3)
    async with pool:
        things = [await pool.getconn() for _ in range(3)]
        for thing in things:
            await pool.putconn(thing)
    assert Thing.made == 3
    assert all(thing.closed for thing in things)


async def test_configure_runs_on_every_new_connection_and_a_failure_is_retried(
    mysql_url: str,
) -> None:
    attempts = 0

    async def configure(conn: Any) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("the first session set-up fails")
        await one(conn, "SET SESSION time_zone = '+05:00'")

    async with Pool(MariaDB(mysql_url), min_size=2, configure=configure) as pool:
        held = [await pool.getconn() for _ in range(2)]
        for conn in held:
            assert await one(conn, "SELECT @@session.time_zone") == (("+05:00",),)
            await pool.putconn(conn)
        stats = pool.stats()
    assert stats["connections_failed"] == 1
    assert stats["connections_opened"] == 2
    assert attempts == 3
