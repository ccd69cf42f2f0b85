"""The store's behaviour, the same on SQLite, MariaDB and PostgreSQL."""

from __future__ import annotations

import asyncio
import math
import random
from pathlib import Path

import pytest

from sdlab.kv import (
    BackendUnavailable,
    InvalidKey,
    InvalidTTL,
    NotAnInteger,
    Store,
    StoreClosed,
    UnknownBackend,
    ValueTooLarge,
    ops,
)
from sdlab.kv.core import MAX_KEY_BYTES
from sdlab.kv.ops import Script
from sdlab.kv.sql import Stmt
from sdlab.sql import connect, database_of


async def rows_in_table(kv: Store) -> int:
    """Rows in the table, expired ones included (what the sweeper has not removed)."""

    def count() -> Script[int]:
        result = yield Stmt(f"SELECT COUNT(*) FROM {kv.backend.dialect.table}")
        return int(result.rows[0][0])

    return await kv.read(count())


async def test_set_get_overwrite_and_missing(store: Store) -> None:
    assert await store.get("nothing") is None
    assert await store.set("k", "one")
    assert await store.get("k") == b"one"
    assert await store.set("k", b"two")
    assert await store.get("k") == b"two"


async def test_values_are_binary_safe(store: Store) -> None:
    every_byte = bytes(range(256)) * 4
    await store.set(b"\x00key\xff\r\n", every_byte)
    assert await store.get(b"\x00key\xff\r\n") == every_byte
    await store.set("empty", b"")
    assert await store.get("empty") == b""


async def test_keys_and_values_are_checked(store: Store) -> None:
    with pytest.raises(InvalidKey):
        await store.set("", "v")
    with pytest.raises(InvalidKey):
        await store.get("k" * (MAX_KEY_BYTES + 1))
    await store.set("k" * MAX_KEY_BYTES, "longest key")
    assert await store.get("k" * MAX_KEY_BYTES) == b"longest key"
    with pytest.raises(ValueTooLarge):
        await store.set("k", b"x" * (store.max_value + 1))
    with pytest.raises(InvalidTTL):
        await store.set("k", "v", ttl=0)


async def test_a_key_expires(store: Store) -> None:
    await store.set("short", "lived", ttl=0.2)
    await store.set("forever", "here")
    assert 0 < await store.pttl("short") <= 200
    assert await store.ttl("forever") == -1
    await asyncio.sleep(0.3)
    assert await store.get("short") is None  # lazily: the row is still in the table
    assert await store.ttl("short") == -2
    assert await store.exists("short", "forever") == 1
    assert await store.mget(["short", "forever"]) == [None, b"here"]
    assert await rows_in_table(store) == 2


async def test_a_ttl_too_far_off_is_refused_alone(store: Store) -> None:
    # An expiry past what a 64-bit column holds is the caller's error, raised before it
    # reaches a batch: the writes batched with it still commit.
    outcomes = await asyncio.gather(
        store.set("before", "1"),
        store.set("far", "v", ttl=1e300),
        store.set("after", "2"),
        return_exceptions=True,
    )
    assert outcomes[0] is True
    assert isinstance(outcomes[1], InvalidTTL)
    assert outcomes[2] is True
    assert await store.mget(["before", "far", "after"]) == [b"1", None, b"2"]
    for ttl in (1e300, math.inf, math.nan):
        with pytest.raises(InvalidTTL):
            await store.expire("before", ttl)
    with pytest.raises(InvalidTTL):
        await store.expire_at("before", 2**63)
    assert await store.ttl("before") == -1


async def test_nx_and_xx(store: Store) -> None:
    assert not await store.set("k", "v", xx=True)  # XX: only if it exists
    assert await store.get("k") is None
    assert await store.set("k", "first", nx=True)  # NX: only if it does not
    assert not await store.set("k", "second", nx=True)
    assert await store.get("k") == b"first"
    assert await store.set("k", "third", xx=True)
    assert await store.get("k") == b"third"
    await store.set("gone", "v", ttl=0.05)
    await asyncio.sleep(0.1)
    assert not await store.set("gone", "v", xx=True)  # an expired key does not exist
    assert await store.set("gone", "again", nx=True)
    assert await store.ttl("gone") == -1


async def test_keep_ttl(store: Store) -> None:
    await store.set("k", "v", ttl=100)
    await store.set("k", "w", keep_ttl=True)
    assert await store.get("k") == b"w"
    assert 98 <= await store.ttl("k") <= 100
    await store.set("k", "x")  # a plain SET drops the expiry, as in Redis
    assert await store.ttl("k") == -1
    with pytest.raises(ValueError, match="exclude"):  # not a ttl silently ignored
        await store.set("k", "y", ttl=5, keep_ttl=True)
    assert await store.get("k") == b"x"


async def test_incr(store: Store) -> None:
    assert await store.incr("n") == 1
    assert await store.incr("n", 41) == 42
    assert await store.incr("n", -50) == -8
    await store.set("n", "  7")
    with pytest.raises(NotAnInteger):
        await store.incr("n")
    await store.set("text", "seven")
    with pytest.raises(NotAnInteger):
        await store.incr("text")
    assert await store.get("text") == b"seven"  # unchanged
    await store.set("big", str(2**63 - 1))
    with pytest.raises(NotAnInteger, match="overflow"):
        await store.incr("big")
    await store.set("huge", "9" * 5000)  # too many digits for int(), let alone 64 bits
    with pytest.raises(NotAnInteger, match="not an integer"):
        await store.incr("huge")
    await store.set("ttl", "5", ttl=100)
    assert await store.incr("ttl") == 6
    assert await store.ttl("ttl") > 0  # INCR keeps the expiry


async def test_delete_exists_and_deleted_keys(store: Store) -> None:
    await store.mset({"a": "1", "b": "2"})
    assert await store.exists("a", "a", "b", "c") == 3  # named twice, counted twice
    assert await store.delete("a", "a", "c") == 1
    assert await store.delete("a") == 0
    assert await store.get("a") is None
    assert await store.set("a", "back", nx=True)
    assert await store.get("a") == b"back"


async def test_expire_ttl_persist(store: Store) -> None:
    assert not await store.expire("none", 10)
    await store.set("k", "v")
    assert await store.expire("k", 10)
    assert 9 <= await store.ttl("k") <= 10
    assert await store.persist("k")
    assert not await store.persist("k")  # no expiry left to remove
    assert await store.ttl("k") == -1
    assert await store.expire("k", 0)  # an expiry in the past deletes
    assert await store.get("k") is None


async def test_get_with_ttl_reads_both_at_once(store: Store) -> None:
    assert await store.get_with_ttl("none") is None
    await store.set("k", "v", ttl=100)
    assert await store.get_with_ttl("k") == (b"v", 100)
    await store.set("k", "w")
    assert await store.get_with_ttl("k") == (b"w", -1)
    await store.set("k", "x", ttl=0.05)
    await asyncio.sleep(0.1)
    assert await store.get_with_ttl("k") is None


async def test_mget_mset(store: Store) -> None:
    await store.mset([("x", "1"), ("y", b"\x00")])
    assert await store.mget(["x", "nope", "y", "x"]) == [b"1", None, b"\x00", b"1"]
    many = {f"m{i:04}": str(i) for i in range(1200)}  # more than one statement's worth
    await store.mset(many)
    values = await store.mget(list(many))
    assert values == [v.encode() for v in many.values()]


@pytest.mark.parametrize("group_commit", [True, False], ids=["group", "naive"])
async def test_mset_naming_a_key_twice_keeps_the_last(backend_url: str, group_commit: bool) -> None:
    async with Store(backend_url, group_commit=group_commit, sweep_interval=0) as kv:
        await kv.mset([("a", "1"), ("b", "x"), ("a", "2")])  # MSET a 1 b x a 2, as Redis
        assert await kv.mget(["a", "b"]) == [b"2", b"x"]


async def test_scan_by_prefix_with_a_cursor(store: Store) -> None:
    await store.mset({f"user:{i:03}": "u" for i in range(25)})
    await store.mset({"user;after": "x", "use": "x", "order:1": "x"})
    await store.set("user:gone", "x", ttl=0.05)
    await asyncio.sleep(0.1)
    seen: list[bytes] = []
    after = None
    pages = 0
    while True:
        page, after = await store.scan("user:", after=after, count=10)
        seen += page
        pages += 1
        if after is None:
            break
    assert seen == [f"user:{i:03}".encode() for i in range(25)]
    assert pages == 3
    assert [k async for k in store.keys(b"\xff")] == []
    assert len([k async for k in store.keys(b"")]) == 28
    assert await store.size() == 28


async def test_the_sweeper_removes_expired_rows_in_batches(backend_url: str) -> None:
    async with Store(backend_url, sweep_interval=0, sweep_batch=7) as kv:
        await kv.mset({f"k{i}": "v" for i in range(30)})
        for i in range(20):
            await kv.expire(f"k{i}", 0.05)
        await kv.delete("k29")
        await asyncio.sleep(0.1)
        assert await rows_in_table(kv) == 30
        assert await kv.sweep() == 21
        assert kv._sweeper.statements == 4  # 7 + 7 + 7 + 0: never more than 7 at once
        assert await rows_in_table(kv) == 9
        assert await kv.size() == 9


async def test_the_background_sweeper_runs_by_itself(backend_url: str) -> None:
    async with Store(backend_url, sweep_interval=0.05) as kv:
        await kv.set("k", "v", ttl=0.01)
        for _ in range(100):
            await asyncio.sleep(0.05)
            if kv.stats()["swept"]:
                break
        assert kv.stats()["swept"] == 1
        assert await rows_in_table(kv) == 0


async def test_writers_reviving_expired_keys_while_the_sweeper_deletes_them(
    backend_url: str,
) -> None:
    # The sweeper deletes expired rows while clients set those keys again (plain SET,
    # SET NX, INCR): a revived key is never swept, and no write fails (on MariaDB the
    # sweeper and a batch lock rows in different orders, and deadlock now and then).
    keys = [f"k{i}" for i in range(1500)]
    async with Store(backend_url, sweep_interval=0, sweep_batch=100) as kv:
        await asyncio.gather(*(kv.set(key, "old", ttl=0.05) for key in keys))
        await asyncio.sleep(0.1)  # expired, not yet swept
        random.Random(0).shuffle(keys)  # a batch locks them in this order
        revivals = [
            kv.set(key, "new") if i % 3 == 0
            else kv.set(key, "new", nx=True) if i % 3 == 1
            else kv.incr(key)
            for i, key in enumerate(keys)
        ]  # fmt: skip
        sweeping = asyncio.create_task(kv.sweep())
        assert all(await asyncio.gather(*revivals))
        await sweeping
        values = await kv.mget(keys)
    assert [v for v in values if v not in (b"new", b"1")] == []


async def test_concurrent_writes_share_transactions(store: Store) -> None:
    results = await asyncio.gather(*(store.set(f"k{i}", str(i)) for i in range(200)))
    assert all(results)
    stats = store.stats()
    assert stats["writes"] == 200
    assert stats["batches"] <= 2  # all queued before the writer woke: one batch (or two)
    assert await store.mget([f"k{i}" for i in range(200)]) == [str(i).encode() for i in range(200)]


async def test_a_batch_keeps_each_writes_own_result(store: Store) -> None:
    await store.set("text", "abc")
    outcomes = await asyncio.gather(
        store.set("k", "1"),
        store.incr("text"),  # fails alone; the rest of its batch commits
        store.incr("k"),
        store.set("k", "x", nx=True),
        store.delete("missing"),
        return_exceptions=True,
    )
    assert outcomes[0] is True
    assert isinstance(outcomes[1], NotAnInteger)
    assert outcomes[2:] == [2, False, 0]
    assert await store.get("k") == b"2"


async def test_the_same_key_twice_in_a_batch_keeps_the_last(store: Store) -> None:
    await asyncio.gather(*(store.set("k", str(i)) for i in range(50)))
    assert await store.get("k") == b"49"


@pytest.mark.parametrize("group_commit", [True, False], ids=["group", "naive"])
async def test_two_stores_on_one_table_never_lose_an_increment(
    backend_url: str, group_commit: bool
) -> None:
    # Two servers on one table: SQLite serializes them with its file lock, the servers
    # with row locks; either way no update is lost and only one NX wins.
    async with (
        Store(backend_url, group_commit=group_commit, sweep_interval=0) as a,
        Store(backend_url, group_commit=group_commit, sweep_interval=0) as b,
    ):
        await asyncio.gather(*(kv.incr("counter") for kv in (a, b) for _ in range(100)))
        await asyncio.gather(*(kv.set("once", f"{i}", nx=True) for i, kv in enumerate((a, b))))
        assert await a.get("counter") == b"200"
        assert await a.get("once") in (b"0", b"1")


async def test_deadlocks_between_two_stores_are_ridden_out(backend_url: str) -> None:
    # Two group-commit servers on one table lock rows in the order their batches hold
    # them, so they deadlock; the database breaks each deadlock by rolling one
    # transaction back. That batch runs again: no client hears of it, and no increment
    # is lost or counted twice.
    keys = [f"n{i}" for i in range(8)]
    if backend_url.startswith("postgresql"):  # it looks for deadlocks after 1 s by default
        session = await connect(backend_url)
        try:
            database = database_of(backend_url)
            await session.execute(f'ALTER DATABASE "{database}" SET deadlock_timeout = 20')
        finally:
            await session.close()

    async def client(kv: Store, seed: int) -> None:
        pick = random.Random(seed)
        for _ in range(40):
            await kv.incr(pick.choice(keys))

    async with (
        Store(backend_url, sweep_interval=0) as a,
        Store(backend_url, sweep_interval=0) as b,
    ):
        await asyncio.gather(*(client(kv, i) for i, kv in enumerate([a, b] * 10)))
        assert sum(int(v or 0) for v in await a.mget(keys)) == 20 * 40


async def test_close_commits_what_is_queued_then_refuses(backend_url: str) -> None:
    kv = Store(backend_url, sweep_interval=0)
    await kv.open()
    queued = [asyncio.create_task(kv.set(f"q{i}", "v")) for i in range(20)]
    await asyncio.sleep(0)  # the tasks have queued their writes
    await kv.close()
    assert all(await asyncio.gather(*queued))
    with pytest.raises(StoreClosed):
        await kv.set("late", "v")
    with pytest.raises(StoreClosed):
        await kv.get("q0")
    async with Store(backend_url, sweep_interval=0) as again:
        assert await again.exists(*(f"q{i}" for i in range(20))) == 20


async def test_url_parameters_reach_postgresql_or_are_refused(postgres_db: str) -> None:
    # `?sslmode=require` silently dropped would be a plain-text connection.
    url = f"{postgres_db}?table=kv_named&application_name=sdlab-kv-test"

    def application_name() -> Script[str]:
        return str((yield Stmt("SELECT current_setting('application_name')")).rows[0][0])

    async with Store(url, sweep_interval=0) as kv:
        assert await kv.read(application_name()) == "sdlab-kv-test"
        assert kv.backend.dialect.table == "kv_named"
    for ignored in ("mysql://root@127.0.0.1/kv?ssl=1", "sqlite:///kv.sqlite3?mode=ro"):
        with pytest.raises(UnknownBackend, match="only table="):
            Store(ignored)


async def test_a_full_sqlite_file_says_so(tmp_path: Path) -> None:
    # SQLite rolls a transaction back by itself when the disk is full: the error is the
    # disk's, not a failed ROLLBACK's, and the next write goes through.
    def cap_the_file() -> Script[None]:
        pages = (yield Stmt("PRAGMA page_count")).rows[0][0]
        yield Stmt(f"PRAGMA max_page_count = {pages + 20}")

    async with Store(f"sqlite:///{tmp_path / 'kv.sqlite3'}", sweep_interval=0) as kv:
        await kv.backend.write(cap_the_file)
        with pytest.raises(BackendUnavailable, match="database or disk is full"):
            await kv.set("big", b"x" * 500_000)
        assert await kv.set("small", "v")
        assert await kv.get("small") == b"v"


async def test_a_cancelled_close_still_answers_every_queued_write(backend_url: str) -> None:
    # `asyncio.wait_for(kv.close(), ...)` running out of time, say: the caller stops
    # waiting, but the close goes on, so no write is left waiting forever for its answer.
    kv = Store(backend_url, sweep_interval=0)
    await kv.open()
    queued = [asyncio.create_task(kv.set(f"q{i}", "v")) for i in range(50)]
    closing = asyncio.create_task(kv.close())
    for _ in range(100):  # until the writer has taken the batch (close() waits for it)
        await asyncio.sleep(0)
        if not kv.stats()["queued"]:
            break
    closing.cancel()  # while the writer commits the batch
    answered, waiting = await asyncio.wait(queued, timeout=60)
    assert not waiting, f"{len(waiting)} writes never answered"
    assert all(task.result() for task in answered)
    with pytest.raises(asyncio.CancelledError):
        await closing
    await kv.close()  # waits for the close that goes on
    with pytest.raises(StoreClosed):
        await kv.get("q0")
    async with Store(backend_url, sweep_interval=0) as again:
        assert await again.exists(*(f"q{i}" for i in range(50))) == 50


async def test_each_database_is_a_table_of_its_own_and_swept(store: Store) -> None:
    await store.databases()
    three = store.dialect(3)
    await store.apply(ops.In(three, 3, ops.Put(((b"k", b"in 3", None), (b"old", b"x", 1)))))
    await store.set("k", "in 0")
    found, _ = await store.lookup([b"k", b"old"], 3)
    assert found[b"k"][0] == b"in 3"
    assert b"old" not in found  # expired long ago
    assert await store.get("k") == b"in 0"
    assert await store.sweep() == 1  # the expired row of database 3
