"""Long-poll waiting, announcements between fleets, and the provisioner, on real servers.

Each fleet stands for one process of the service (its own pools and subscription);
`test_processes.py` does the same with real processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from sdlab.infra.services import postgres
from sdlab.polling import Delays, Fleet, FleetClosed, Status, Store, UnknownServer
from tests.helpers import eventually
from tests.polling.conftest import OpenFleet

LATER = Delays(to_do=3600, in_progress=3600)


async def waiting(fleet: Fleet, count: int = 1) -> None:
    """Until `count` waiters are parked on the fleet."""

    async def probe() -> int:
        return fleet.waiting

    assert await eventually(probe, count) == count


async def test_a_newer_version_is_answered_at_once(open_fleet: OpenFleet) -> None:
    fleet = await open_fleet()
    (added,) = await fleet.add(["a"])
    assert await fleet.wait("a", since=0, timeout=0) == added
    assert await fleet.wait("a", since=added.version, timeout=0) is None  # nothing newer
    assert await fleet.wait("a", since=added.version, timeout=0.05) is None


async def test_a_waiter_is_woken_by_the_change(open_fleet: OpenFleet) -> None:
    fleet = await open_fleet(delays=LATER)
    (added,) = await fleet.add(["a"])
    waiter = asyncio.create_task(fleet.wait("a", since=added.version, timeout=30))
    await waiting(fleet)
    created = await fleet.create("a")
    assert await waiter == created
    assert fleet.waiting == 0


async def test_a_change_between_two_polls_is_not_lost(open_fleet: OpenFleet) -> None:
    """The client has version V and is between polls when the change lands: its next
    poll (since=V) is answered at once, without waiting for a further change."""
    fleet = await open_fleet(delays=LATER)
    (added,) = await fleet.add(["a"])
    first = await fleet.wait("a", since=0, timeout=30)
    assert first == added
    created = await fleet.create("a")  # no poll outstanding
    assert await fleet.wait("a", since=first.version, timeout=0) == created


async def test_thousands_of_waiters_are_woken_by_one_change(open_fleet: OpenFleet) -> None:
    fleet = await open_fleet(delays=LATER)
    (added,) = await fleet.add(["a"])
    waiters = [
        asyncio.create_task(fleet.wait("a", since=added.version, timeout=60)) for _ in range(2000)
    ]
    await waiting(fleet, 2000)
    created = await fleet.create("a")
    assert set(await asyncio.gather(*waiters)) == {created}
    assert fleet.reads < 10  # one read per change, not one per waiter


async def test_unknown_servers_and_versions_from_another_history(open_fleet: OpenFleet) -> None:
    fleet = await open_fleet()
    with pytest.raises(UnknownServer):
        await fleet.wait("nope", since=0, timeout=1)
    (added,) = await fleet.add(["a"])
    # A version this table never reached (the client saw an older table of that name):
    # answered at once with what there is, so the client starts again from it.
    assert await fleet.wait("a", since=10_000, timeout=30) == added
    version, servers = await fleet.wait_all(since=10_000, timeout=30)  # type: ignore[misc]
    assert (version, servers) == (added.version, [added])


async def test_a_since_from_another_server_waits(open_fleet: OpenFleet) -> None:
    """Versions are table-wide: `since` newer than this server's own version, but one the
    table has reached, is not another history; the poll waits. Both when the mirror has
    the version and when it is behind (a fleet that has not heard of the change)."""
    fleet = await open_fleet(delays=LATER)
    await fleet.add(["a", "b"])
    behind = await open_fleet(channel="none", sweep=None, provision=False)
    changed = await fleet.create("b")
    assert behind.version < changed.version  # nothing tells it: no channel, no sweep
    for one in (fleet, behind):
        assert await one.wait("a", since=changed.version, timeout=0.2) is None
    waiter = asyncio.create_task(behind.wait("a", since=changed.version, timeout=30))
    await waiting(behind)
    created = await fleet.create("a")
    behind.poke()
    assert await waiter == created


async def test_wait_all_returns_what_changed_since(open_fleet: OpenFleet) -> None:
    fleet = await open_fleet(delays=LATER)
    a, b, c = await fleet.add(["a", "b", "c"])
    assert await fleet.wait_all(since=0, timeout=0) == (3, [a, b, c])
    assert await fleet.wait_all(since=3, timeout=0) is None
    waiter = asyncio.create_task(fleet.wait_all(since=3, timeout=30))
    await waiting(fleet)
    created = await fleet.create("b")
    assert await waiter == (4, [created])


async def test_the_provisioner_moves_a_creation_along(open_fleet: OpenFleet) -> None:
    fleet = await open_fleet()  # TO_DO and IN_PROGRESS for 50 ms each
    await fleet.add(["a"])
    server = await fleet.create("a")
    seen = [server.status]
    while server.status is not Status.DONE:
        server = await fleet.wait("a", since=server.version, timeout=30)  # type: ignore[assignment]
        assert server is not None
        seen.append(server.status)
    assert seen == [Status.TO_DO, Status.IN_PROGRESS, Status.DONE]


async def test_a_change_through_one_fleet_wakes_waiters_on_another(
    open_fleet: OpenFleet,
) -> None:
    """No sweep on the waiting side: only the announcement (Redis pub/sub for MariaDB,
    NOTIFY for PostgreSQL) can wake it."""
    one = await open_fleet(delays=LATER)
    other = await open_fleet(sweep=None, provision=False)
    (added,) = await one.add(["a"])
    waiter = asyncio.create_task(other.wait("a", since=added.version, timeout=30))
    await waiting(other)
    created = await one.create("a")
    assert await waiter == created
    assert other.channel is not None
    assert other.channel.received >= 1


async def test_two_provisioners_make_each_transition_once(open_fleet: OpenFleet) -> None:
    one, other = await open_fleet(), await open_fleet()
    ids = [f"s{i}" for i in range(10)]
    await one.add(ids)
    for server_id in ids:
        await (one if int(server_id[1:]) % 2 else other).create(server_id)

    async def all_done() -> bool:
        return {s.status for s in one.servers()} == {Status.DONE} and one.version == 40

    async def made() -> int:  # counted as each commits, which may come after `one` hears
        return one.transitions + other.transitions

    assert await eventually(all_done, True, timeout=30)
    assert await eventually(made, 20) == 20  # 10 x (IN_PROGRESS, DONE)
    assert max(s.version for s in await one.store.all()) == 40  # 10 adds + 10 x 3 changes


async def test_a_fleet_finishes_the_creation_another_started(open_fleet: OpenFleet) -> None:
    starter = await open_fleet(delays=Delays(to_do=0.3, in_progress=0.3), provision=False)
    finisher = await open_fleet(sweep=None)
    await starter.add(["a"])
    created = await starter.create("a")
    await starter.close()  # gone before anything was due
    server: Any = created
    while server.status is not Status.DONE:
        server = await finisher.wait("a", since=server.version, timeout=30)
        assert server is not None
    assert server.version == created.version + 2


@asynccontextmanager
async def row_held(db_url: str, server_id: str) -> AsyncIterator[Callable[[], Awaitable[int]]]:
    """Another session holds the server's row (SELECT ... FOR UPDATE) until the block
    ends. Yields a probe: how many sessions of this database are inside an UPDATE."""
    updating = {
        "mariadb": "SELECT COUNT(*) FROM information_schema.processlist"
        " WHERE db = DATABASE() AND command = 'Query' AND info LIKE 'UPDATE %'",
        "postgresql": "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND state = 'active' AND query LIKE 'UPDATE %'",
    }
    async with await Store.connect(db_url) as holder, holder.db.transaction() as tx:

        async def in_an_update() -> int:
            return int(await holder.db.fetchval(updating[holder.dialect.engine]))

        await tx.fetch(
            f"SELECT * FROM {holder.table} WHERE server_id = %s FOR UPDATE", (server_id,)
        )
        yield in_an_update


async def test_a_fleet_closes_while_its_provisioner_waits_in_a_change(
    open_fleet: OpenFleet, db_url: str, redis_url: str
) -> None:
    """Shutting down while the provisioner's change waits on a row lock: the change is
    cancelled, and the fleet closes (the cancellation must not turn into a database
    error that the provisioner retries)."""
    creator = await open_fleet(delays=Delays(to_do=0, in_progress=3600), provision=False)
    await creator.add(["a"])
    maker = await Fleet.open(db_url, redis_url=redis_url, sweep=None)  # not started yet
    await creator.create("a")  # due at once, and no provisioner runs yet
    async with row_held(db_url, "a") as in_an_update:
        await maker.start()
        assert await eventually(in_an_update, 1) == 1  # the provisioner's, held up
        closing = asyncio.create_task(maker.close())
        await asyncio.wait([closing], timeout=10)
        assert closing.done()
    assert creator.get("a").status is Status.TO_DO  # type: ignore[union-attr]


async def test_each_transition_is_announced_as_it_commits(
    open_fleet: OpenFleet, db_url: str, redis_url: str
) -> None:
    """Two creations are due together and a provisioner makes them one after the other;
    the second is held up (another session holds its row). The first one's waiters on
    another process must hear of it now, not when the whole batch is done."""
    delays = Delays(to_do=0, in_progress=3600)
    other = await open_fleet(delays=delays, sweep=None, provision=False)
    await other.add(["first", "second"])
    first = await other.create("first")
    await other.create("second")  # both due at once, and no provisioner runs yet
    maker = await Fleet.open(db_url, redis_url=redis_url, sweep=None)  # not started yet
    try:
        async with row_held(db_url, "second") as in_an_update:
            await maker.start()
            server = await other.wait("first", since=first.version, timeout=20)
            assert server is not None
            assert server.status is Status.IN_PROGRESS
            assert await eventually(in_an_update, 1) == 1  # the second, held up
            assert maker.transitions == 1  # counted as it was made, too
    finally:
        await maker.close()


async def test_a_change_nobody_announced_is_found_by_the_sweep(
    open_fleet: OpenFleet, db_url: str
) -> None:
    """A process that dies between COMMIT and PUBLISH: here a store writing with no
    fleet around it. The waiting fleet finds the change on its next sweep."""
    fleet = await open_fleet(sweep=0.1, provision=False)
    (added,) = await fleet.add(["a"])
    waiter = asyncio.create_task(fleet.wait("a", since=added.version, timeout=30))
    await waiting(fleet)
    async with await Store.connect(db_url) as silent:  # no channel: announces nothing
        created = await silent.create("a", LATER)
    assert await waiter == created


async def test_the_subscription_comes_before_the_first_read(
    open_fleet: OpenFleet, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change committed just after a starting fleet read the table, before anything
    else happens: it must be announced to that fleet, so the fleet must already listen.
    (Read first and subscribe second, and this change is lost: there is no sweep here.)"""
    writer = await open_fleet(delays=LATER)
    (added,) = await writer.add(["a"])
    late: list[Any] = []
    read = Store.changes_since

    async def read_then_change(self: Store, version: int, **kwargs: Any) -> Any:
        changes = await read(self, version, **kwargs)
        if self is not writer.store and not late:
            late.append(await writer.create("a"))
        return changes

    monkeypatch.setattr(Store, "changes_since", read_then_change)
    starting = await open_fleet(sweep=None, provision=False)
    monkeypatch.undo()
    assert late
    assert await starting.wait("a", since=added.version, timeout=30) == late[0]


async def test_waiters_are_released_when_the_fleet_closes(open_fleet: OpenFleet) -> None:
    fleet = await open_fleet()
    (added,) = await fleet.add(["a"])
    waiters = [
        asyncio.create_task(fleet.wait("a", since=added.version, timeout=60)),
        asyncio.create_task(fleet.wait_all(since=added.version, timeout=60)),
    ]
    await waiting(fleet, 2)
    fleet.release_waiters()
    for waiter in waiters:
        with pytest.raises(FleetClosed):
            await waiter


async def test_a_redis_restart_loses_no_announced_change(
    servers: Any, mysql_db: str, redis_url: str
) -> None:
    """Redis is down while a change commits (its PUBLISH fails). When Redis is back,
    the waiting fleet resubscribes and reads what it missed; no sweep helps here."""
    (private,) = servers.redis()
    one = await Fleet.open(mysql_db, redis_url=private.url, delays=LATER)
    other = await Fleet.open(mysql_db, redis_url=private.url, sweep=None, provision=False)
    async with one, other:
        (added,) = await one.add(["a"])
        waiter = asyncio.create_task(other.wait("a", since=added.version, timeout=60))
        await waiting(other)
        private.kill()
        created = await one.create("a")
        await asyncio.sleep(0.3)  # the subscriber has noticed, and retries
        assert not waiter.done()
        private.start()
        assert await waiter == created
        assert other.channel is not None
        assert other.channel.resyncs >= 2


async def test_a_lost_listen_session_is_resubscribed(postgres_db: str) -> None:
    """PostgreSQL ends the LISTEN session (pg_terminate_backend, as a restart or a proxy
    would); the channel listens again, reads the table, and announcements flow again."""
    one = await Fleet.open(postgres_db, delays=LATER)
    other = await Fleet.open(postgres_db, sweep=None, provision=False)
    async with one, other:
        (added,) = await one.add(["a"])
        assert other.channel is not None
        resyncs = other.channel.resyncs
        async with await postgres.connect(postgres_db, autocommit=True) as admin:
            cur = await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN %%'"
            )
            assert [row[0] for row in await cur.fetchall()] == [True, True]  # both fleets

        async def resubscribed() -> bool:
            return other.channel is not None and other.channel.resyncs > resyncs

        assert await eventually(resubscribed, True)
        waiter = asyncio.create_task(other.wait("a", since=added.version, timeout=30))
        await waiting(other)
        created = await one.create("a")
        assert await waiter == created


async def test_a_postgres_channel_needs_the_postgres_store(mysql_db: str) -> None:
    with pytest.raises(ValueError, match="needs the PostgreSQL store"):
        await Fleet.open(mysql_db, channel="postgres")
    with pytest.raises(ValueError, match="needs redis_url"):
        await Fleet.open(mysql_db, channel="redis")


@pytest.mark.slow
async def test_a_database_crash_loses_no_update(
    servers: Any, redis_url: str, namespace: str
) -> None:
    """MariaDB is killed while a creation is under way, and its transitions come due
    while it is down. When it is back, the provisioners make them and the waiters on
    the other fleet get them: nothing is lost, nothing is made twice."""
    (db,) = servers.mariadb()
    one = await Fleet.open(db.url, redis_url=redis_url, table=namespace, delays=Delays(0.3, 0.3))
    other = await Fleet.open(db.url, redis_url=redis_url, table=namespace)
    async with one, other:
        await one.add(["a"])
        created = await one.create("a")

        async def mirrored() -> bool:
            return other.version >= created.version

        assert await eventually(mirrored, True)
        db.kill()
        await asyncio.sleep(0.8)  # IN_PROGRESS and DONE are both due by now
        waiter = asyncio.create_task(other.wait("a", since=created.version, timeout=60))
        await waiting(other)
        assert other.get("a") == created  # the mirror still answers
        db.start()
        server: Any = await waiter
        while server.status is not Status.DONE:
            server = await other.wait("a", since=server.version, timeout=60)
        assert server.version == created.version + 2
        assert one.transitions + other.transitions == 2
