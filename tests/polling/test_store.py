"""The servers table on real MariaDB and PostgreSQL: versions, refusals, the schedule."""

from __future__ import annotations

import asyncio

import pytest

from sdlab.infra.services import postgres
from sdlab.polling import (
    AlreadyCreated,
    CreationInProgress,
    Delays,
    Status,
    Store,
    UnknownServer,
)

LATER = Delays(to_do=3600, in_progress=3600)  # nothing becomes due during the test
NOW = Delays(to_do=0, in_progress=0)  # everything is due at once


async def test_every_change_gets_a_greater_version(store: Store) -> None:
    assert await store.newest() == 0
    added = await store.add(["a", "b"])
    assert [(s.server_id, s.status, s.version) for s in added] == [
        ("a", Status.NOT_YET_CREATED, 1),
        ("b", Status.NOT_YET_CREATED, 2),
    ]
    assert await store.add(["a", "b"]) == []  # present already: nothing added, no version

    created = await store.create("a", NOW)
    assert (created.status, created.version) == (Status.TO_DO, 3)
    made = await store.advance_due()
    assert [(s.status, s.version) for s in made] == [(Status.IN_PROGRESS, 4)]
    made = await store.advance_due()
    assert [(s.status, s.version) for s in made] == [(Status.DONE, 5)]
    assert await store.advance_due() == []
    terminated = await store.terminate("a")
    assert (terminated.status, terminated.version) == (Status.NOT_YET_CREATED, 6)

    assert [(s.server_id, s.version) for s in await store.changes_since(2)] == [("a", 6)]
    assert [s.server_id for s in await store.changes_since(0)] == ["b", "a"]
    assert await store.newest() == 6
    assert terminated.changed_at > created.changed_at


async def test_refusals_say_why(store: Store) -> None:
    await store.add(["a"])
    with pytest.raises(UnknownServer, match="no server 'nope'"):
        await store.create("nope", LATER)
    with pytest.raises(UnknownServer):
        await store.terminate("nope")

    await store.create("a", LATER)
    with pytest.raises(CreationInProgress, match=r"is being created \(status TO_DO") as caught:
        await store.create("a", LATER)
    assert caught.value.server.status is Status.TO_DO
    with pytest.raises(CreationInProgress):
        await store.terminate("a")
    assert (await store.get("a")).version == 2  # type: ignore[union-attr]


async def test_done_refuses_create_until_terminated(store: Store) -> None:
    await store.add(["a"])
    await store.create("a", NOW)
    await store.advance_due()
    await store.advance_due()
    with pytest.raises(AlreadyCreated, match="terminate"):
        await store.create("a", NOW)
    await store.terminate("a")
    assert (await store.create("a", LATER)).status is Status.TO_DO


async def test_terminating_a_server_never_created_changes_nothing(store: Store) -> None:
    (added,) = await store.add(["a"])
    assert await store.terminate("a") == added


async def test_the_schedule_is_kept_in_the_database(store: Store) -> None:
    await store.add(["soon", "later"])
    assert await store.seconds_until_due() is None
    await store.create("later", Delays(to_do=3600, in_progress=1))
    until = await store.seconds_until_due()
    assert until is not None
    assert 3500 < until <= 3600
    await store.create("soon", NOW)
    until = await store.seconds_until_due()
    assert until is not None
    assert until <= 0
    assert [s.server_id for s in await store.advance_due()] == ["soon"]


async def test_two_processes_advancing_at_once_make_each_transition_once(db_url: str) -> None:
    """Two stores (two connection pools, as two processes have) race for the same due
    transitions; the guard in the UPDATE lets exactly one win each."""
    ids = [f"s{i}" for i in range(20)]
    async with await Store.connect(db_url) as one, await Store.connect(db_url) as other:
        await one.add(ids)
        for server_id in ids:
            await one.create(server_id, NOW)

        async def advance(store: Store) -> int:
            made = 0
            while True:
                step = await store.advance_due()
                if not step and await store.seconds_until_due() is None:
                    return made
                made += len(step)

        made = await asyncio.gather(advance(one), advance(other))
        assert sum(made) == 2 * len(ids)  # IN_PROGRESS and DONE, once each
        servers = await one.all()
        assert {s.status for s in servers} == {Status.DONE}
        # 20 adds + 20 creates + 40 transitions: no version was taken twice or skipped.
        assert max(s.version for s in servers) == 80


async def test_versions_are_handed_out_in_commit_order(db_url: str) -> None:
    """Writers on eight connections commit changes at once while a reader follows
    `changes_since(cursor)`. Each server changes once, so versions are never overwritten:
    every read must return exactly the versions cursor+1, cursor+2, ... with no hole. A
    hole would be a version committed after a greater one, which a reader that moved
    past the greater one would never see."""
    ids = [f"s{i}" for i in range(160)]
    async with (
        await Store.connect(db_url, pool_size=8) as writer,
        await Store.connect(db_url, pool_size=1) as reader,
    ):
        await writer.add(ids)
        cursor = len(ids)
        seen: list[str] = []
        done = False

        async def follow() -> None:
            nonlocal cursor
            while True:
                finished = done  # read after the writers finished: the last read
                changes = await reader.changes_since(cursor)
                versions = [s.version for s in changes]
                assert versions == list(range(cursor + 1, cursor + 1 + len(versions)))
                seen.extend(s.server_id for s in changes)
                cursor += len(versions)
                if finished:
                    return

        async def write(share: list[str]) -> None:
            for server_id in share:
                await writer.create(server_id, LATER)

        following = asyncio.create_task(follow())
        await asyncio.gather(*(write(ids[i::8]) for i in range(8)))
        done = True
        await following
        assert sorted(seen) == sorted(ids)


async def test_a_bad_url_or_table_name_is_refused(mysql_url: str) -> None:
    with pytest.raises(ValueError, match="scheme should be"):
        await Store.connect("sqlite:///tmp/x.db")
    with pytest.raises(ValueError, match="table name 'bad-name' must match"):
        await Store.connect(mysql_url, table="bad-name")


@pytest.mark.parametrize("isolation", ["repeatable read", "serializable"])
async def test_changes_commit_whatever_the_default_isolation(
    postgres_db: str, isolation: str
) -> None:
    """A PostgreSQL database whose default isolation is stricter than READ COMMITTED:
    concurrent changes all queue on the clock row, and each must commit in its turn, not
    fail to serialize (which a client would see as a 503)."""
    name = postgres_db.rsplit("/", 1)[1]
    async with await postgres.connect(postgres_db, autocommit=True) as admin:
        await admin.execute(
            f"ALTER DATABASE \"{name}\" SET default_transaction_isolation = '{isolation}'"
        )
    ids = [f"s{i}" for i in range(40)]
    async with await Store.connect(postgres_db, pool_size=8) as store:
        await store.add(ids)
        await asyncio.gather(*(store.create(server_id, LATER) for server_id in ids))
        assert sorted(s.version for s in await store.all()) == list(range(41, 81))
