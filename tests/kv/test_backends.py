"""The backends on the shared SQL layer: its naming rule, its named errors and its
deadlock reruns, the same through kv on every database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from sdlab import sql
from sdlab.kv import InvalidTable, Store, backend_for
from sdlab.kv.backends import SQLiteBackend
from sdlab.kv.ops import Script
from sdlab.kv.sql import Stmt

URLS = ["sqlite://", "mysql://root@127.0.0.1:3306/kv", "postgresql://postgres@127.0.0.1/kv"]


@pytest.mark.parametrize("table", ["2x", "a" * 64, "no-dashes", "caf\u00e9"])
def test_a_table_name_follows_the_one_naming_rule(table: str) -> None:
    for url in URLS:
        with pytest.raises(InvalidTable) as caught:
            backend_for(f"{url}?table={table}")
        assert isinstance(caught.value, sql.InvalidIdentifier)
    assert backend_for(f"sqlite://?table={'a' * 63}").dialect.table == "a" * 63


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:////tmp/kv/kv.sqlite3", "/tmp/kv/kv.sqlite3"),
        ("sqlite:////tmp/kv/kv.sqlite3?table=t", "/tmp/kv/kv.sqlite3"),
        ("sqlite:///kv/kv.sqlite3?table=t", "kv/kv.sqlite3"),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
    ],
)
def test_a_sqlite_url_names_its_file(url: str, path: str | None) -> None:
    backend = backend_for(url)
    assert isinstance(backend, SQLiteBackend)
    assert backend.path == (None if path is None else Path(path))


async def test_a_failed_write_is_a_named_error_and_leaves_nothing(backend_url: str) -> None:
    async with Store(backend_url, sweep_interval=0) as kv:
        d = kv.backend.dialect
        insert = f"INSERT INTO {d.quoted} (k, v) VALUES ({d.sql.marks(2)})"

        def insert_twice() -> Script[None]:
            yield Stmt(insert, (b"new", b"first"))
            yield Stmt(insert, (b"new", b"again"))

        with pytest.raises(sql.DuplicateKey):
            await kv.backend.write(insert_twice)
        assert await kv.get("new") is None  # the first insert was rolled back with it
        assert kv.backend.deadlocks == 0  # not a reason to run it again


@pytest.fixture(params=["mysql", "postgres"])
def server_url(request: pytest.FixtureRequest) -> str:
    """A fresh database on MariaDB and on PostgreSQL."""
    return str(request.getfixturevalue(f"{request.param}_db"))


async def test_a_deadlocks_victim_runs_again_as_a_new_script(server_url: str) -> None:
    # Two transactions lock x and y in opposite orders, sleeping in between so that both
    # hold their first lock: the database rolls one back, and it runs again, built anew.
    mariadb = sql.engine_of(server_url) == "mariadb"
    sleep = Stmt("SELECT SLEEP(0.5)" if mariadb else "SELECT pg_sleep(0.5)")
    built: list[bytes] = []

    def crossing(kv: Store, first: bytes, second: bytes, tag: bytes) -> Callable[[], Script[bytes]]:
        d = kv.backend.dialect

        def build() -> Script[bytes]:
            built.append(tag)
            yield d.select(first, lock=True)
            yield sleep
            yield d.select(second, lock=True)
            yield d.update_value(first, tag)
            yield d.update_value(second, tag)
            return tag

        return build

    async with (
        Store(server_url, sweep_interval=0) as a,
        Store(server_url, sweep_interval=0) as b,
    ):
        await a.mset({"x": "-", "y": "-"})
        done = await asyncio.gather(
            a.backend.write(crossing(a, b"x", b"y", b"a")),
            b.backend.write(crossing(b, b"y", b"x", b"b")),
        )
        assert done == [b"a", b"b"]  # neither caller heard of the deadlock
        assert a.backend.deadlocks + b.backend.deadlocks == 1
        assert len(built) == 3
        victim = built[-1]
        assert await a.mget(["x", "y"]) == [victim, victim]  # the rerun committed last


async def test_a_missing_mariadb_database_is_created(mysql_url: str) -> None:
    assert backend_for("mysql://root@127.0.0.1:3306").name.endswith(":3306/sdlab_kv")
    url = sql.with_database(mysql_url, f"kv_{uuid.uuid4().hex[:10]}")
    try:
        async with Store(url, sweep_interval=0) as kv:
            assert await kv.set("k", "v")
    finally:
        await sql.drop_database(url)
