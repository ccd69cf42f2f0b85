"""The scheduler on real servers: a wait is what the server says, not a slow return."""

from __future__ import annotations

import asyncio

from sdlab import sql
from sdlab.locking import T1, T2, LockWaits, run
from tests.helpers import eventually

SETUP = (
    "DROP TABLE IF EXISTS test",
    "CREATE TABLE test (id int PRIMARY KEY, value int)",
    "INSERT INTO test (id, value) VALUES (1, 10), (2, 20)",
)


def sleep(engine: str, seconds: float) -> str:
    return f"SELECT SLEEP({seconds})" if engine == "mariadb" else f"SELECT pg_sleep({seconds})"


async def test_a_slow_statement_is_not_a_lock_wait(db_url: str) -> None:
    engine = sql.dialect_for(db_url).engine
    timeline = await run(
        db_url,
        [T1("BEGIN"), T1(sleep(engine, 0.4), "slow"), T2("SELECT * FROM test"), T1("COMMIT")],
        setup=SETUP,
    )
    slow = timeline.event("slow")
    assert slow.error is None
    assert not slow.blocked
    # The run waited for it to end before the next step (it never showed a lock wait).
    assert timeline.events[2].started >= slow.ended


async def test_a_lock_wait_names_the_holder_and_the_run_goes_on(db_url: str) -> None:
    timeline = await run(
        db_url,
        [
            T1("BEGIN"),
            T1("UPDATE test SET value = 11 WHERE id = 1"),
            T2("BEGIN"),
            T2("UPDATE test SET value = 12 WHERE id = 1", "T2 waits"),
            T1("SELECT value FROM test WHERE id = 1", "T1 reads on"),
            T1("COMMIT"),
            T2("COMMIT"),
        ],
        setup=SETUP,
    )
    waits, reads = timeline.event("T2 waits"), timeline.event("T1 reads on")
    assert waits.waited_for == ("T1",)
    assert waits.error is None
    assert waits.rowcount == 1
    # T1 read while T2 was still waiting; T2 returned only after T1's commit.
    assert reads.started < waits.ended
    assert reads.rows == [(11,)]
    assert waits.ended >= timeline.events[5].started


async def test_a_step_for_a_waiting_session_waits_for_its_statement(db_url: str) -> None:
    timeline = await run(
        db_url,
        [
            T1("BEGIN"),
            T1("UPDATE test SET value = 11 WHERE id = 1"),
            T2("BEGIN"),
            T2("UPDATE test SET value = 12 WHERE id = 1", "T2 waits"),
            T2("SELECT value FROM test WHERE id = 2", "T2 next"),
            T1("COMMIT"),
        ],
        setup=SETUP,
        lock_timeout=2.0,
    )
    waits, after = timeline.event("T2 waits"), timeline.event("T2 next")
    assert waits.error == "LockWaitTimeout"
    assert waits.blocked
    assert after.started >= waits.ended


async def test_innodb_waits_are_seen_when_asked_twice_in_a_row(mysql_db: str) -> None:
    """InnoDB's lock-wait views are a cache that refreshes only when left alone for
    100 ms: asked again and again without a pause, they would never show the wait."""
    monitor = await sql.connect(mysql_db)
    holder, waiter = await sql.connect(mysql_db), await sql.connect(mysql_db)
    try:
        for statement in SETUP:
            await monitor.run(statement)
        waits = LockWaits(monitor)
        ids = [await holder.server_id(), await waiter.server_id()]
        await holder.begin()
        await holder.execute("UPDATE test SET value = 11 WHERE id = 1")
        assert await waits.waiting(ids) == {}
        await waiter.run("SET SESSION innodb_lock_wait_timeout = 2")
        await waiter.begin()
        blocked = asyncio.create_task(waiter.execute("UPDATE test SET value = 12 WHERE id = 1"))
        seen = await eventually(lambda: waits.waiting(ids), {ids[1]: {ids[0]}}, timeout=3)
        assert seen == {ids[1]: {ids[0]}}
        await holder.commit()
        assert await blocked == 1
    finally:
        for session in (monitor, holder, waiter):
            await session.close()


async def test_waits_are_seen_while_another_client_keeps_the_innodb_cache_stale(
    mysql_db: str,
) -> None:
    """A client reading INNODB_TRX more often than every 100 ms keeps InnoDB's cache
    from refreshing for everyone; the wait is still seen (in SHOW ENGINE INNODB STATUS),
    so the run goes on as it should, only the holder may be unknown."""
    spy = await sql.connect(mysql_db)
    polling = True

    async def poll() -> None:
        while polling:
            await spy.fetch("SELECT COUNT(*) FROM information_schema.INNODB_TRX")
            await asyncio.sleep(0.03)

    task = asyncio.create_task(poll())
    try:
        await asyncio.sleep(0.1)
        timeline = await run(
            mysql_db,
            [
                T1("BEGIN"),
                T1("UPDATE test SET value = 11 WHERE id = 1"),
                T2("BEGIN"),
                T2("UPDATE test SET value = 12 WHERE id = 1", "T2 waits"),
                T1("COMMIT", "T1 commits"),
                T2("COMMIT"),
            ],
            setup=SETUP,
        )
    finally:
        polling = False
        await task
        await spy.close()
    waits = timeline.event("T2 waits")
    assert waits.error is None
    assert waits.waited_for in {("T1",), ("?",)}
    assert waits.ended >= timeline.event("T1 commits").started
