"""The shared SQL layer on the real servers: the same code, the same named errors, on
MariaDB and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sdlab import sql


@pytest.fixture(params=["mysql", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A scratch database on each engine (the plugin's fixtures, dropped afterwards)."""
    return str(request.getfixturevalue(f"{request.param}_db"))


@pytest.fixture
async def db(db_url: str) -> Any:
    async with sql.Database(db_url, max_size=4) as database:
        await database.execute("CREATE TABLE seats (id INT PRIMARY KEY, user_id INT)")
        await database.execute(
            f"INSERT INTO seats (id, user_id) VALUES {', '.join(f'({i}, NULL)' for i in (1, 2))}"
        )
        yield database


# -- URLs and names ------------------------------------------------------------------


def test_with_database_keeps_credentials_port_and_query() -> None:
    url = "postgresql://app:s3cret@db.example:6432/old?sslmode=require&x=1"
    assert (
        sql.with_database(url, "new")
        == "postgresql://app:s3cret@db.example:6432/new?sslmode=require&x=1"
    )
    assert (
        sql.with_database("mysql://root@127.0.0.1:3306/", "shop")
        == "mysql://root@127.0.0.1:3306/shop"
    )
    assert sql.database_of("mysql://root@h/shop?charset=utf8") == "shop"
    assert sql.address_of("mysql://root@h/shop") == "h:3306"
    assert sql.redact(url) == "postgresql://app:***@db.example:6432/old?sslmode=require&x=1"


@pytest.mark.parametrize(
    ("url", "name", "expected"),
    [
        ("sqlite:///kv.sqlite3", "/tmp/x/other.db", "sqlite:////tmp/x/other.db"),
        ("sqlite:////tmp/a.db?table=t", "b.db", "sqlite:///b.db?table=t"),
    ],
)
def test_with_database_on_sqlite_names_a_file(url: str, name: str, expected: str) -> None:
    assert sql.with_database(url, name) == expected
    assert sql.database_of(expected) == name


def test_an_unknown_scheme_is_a_named_error() -> None:
    with pytest.raises(sql.UnknownDatabase, match="mysql://"):
        sql.engine_of("oracle://scott@h/db")


@pytest.mark.parametrize("name", ["seats", "_t", "T_2", "a" * 63])
def test_plain_names_pass(name: str) -> None:
    assert sql.identifier(name) == name


@pytest.mark.parametrize("name", ["", "2x", "a-b", "a b", "x;DROP", "é", "a" * 64, "`x`"])
def test_one_rule_refuses_other_names(name: str) -> None:
    with pytest.raises(sql.InvalidIdentifier):
        sql.MARIADB.quote(name)


# -- statements ----------------------------------------------------------------------


async def test_fetch_execute_and_a_literal_percent(db: sql.Database) -> None:
    assert await db.execute("UPDATE seats SET user_id = %s WHERE id = %s", (7, 1)) == 1
    assert await db.fetch("SELECT id, user_id FROM seats ORDER BY id") == [(1, 7), (2, None)]
    assert await db.fetchval("SELECT '100%'") == "100%"  # no parameters: no %-formatting
    assert await db.fetchone("SELECT id FROM seats WHERE id = 99") is None


async def test_a_session_runs_statement_after_statement(db: sql.Database) -> None:
    async with db.session() as s:
        assert (await s.run("SELECT id FROM seats ORDER BY id")).rows == [(1,), (2,)]
        updated = await s.run("UPDATE seats SET user_id = 3 WHERE id = 2")
        assert (updated.rows, updated.rowcount) == ([], 1)  # not the SELECT's rows
        with pytest.raises(sql.SQLError):
            await s.run("SELEC 1")
        assert await s.fetch("SELECT user_id FROM seats WHERE id = 2") == [(3,)]


async def test_upsert_and_insert_ignore(db: sql.Database) -> None:
    d = db.dialect
    upsert = d.upsert("seats", ["id", "user_id"], key=["id"])
    await db.execute(upsert, (1, 5))
    await db.execute(upsert, (3, 6))
    assert await db.fetch("SELECT id, user_id FROM seats ORDER BY id") == [
        (1, 5),
        (2, None),
        (3, 6),
    ]
    ignore = d.insert_ignore("seats", ["id", "user_id"], key=["id"])
    assert await db.execute(ignore, (1, 9)) == 0
    assert await db.execute(ignore, (4, 9)) == 1
    assert await db.fetchval("SELECT user_id FROM seats WHERE id = 1") == 5


async def test_duplicate_key(db: sql.Database) -> None:
    with pytest.raises(sql.DuplicateKey) as caught:
        await db.execute("INSERT INTO seats (id) VALUES (1)")
    assert caught.value.code in (1062, "23505")
    assert isinstance(caught.value, sql.ConstraintViolation)
    assert caught.value.__cause__ is not None  # the driver's own error


async def test_other_errors_are_sql_errors_with_the_server_code(db: sql.Database) -> None:
    with pytest.raises(sql.SQLError) as caught:
        await db.execute("SELEC 1")
    assert caught.value.code in (1064, "42601")


# -- transactions --------------------------------------------------------------------


async def test_a_failed_block_rolls_back_and_its_error_goes_on(db: sql.Database) -> None:
    async def book_then_fail() -> None:
        async with db.transaction() as tx:
            await tx.execute("UPDATE seats SET user_id = 1 WHERE id = 1")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await book_then_fail()
    assert await db.fetchval("SELECT user_id FROM seats WHERE id = 1") is None
    assert db.pool.stats()["connections_lost"] == 0


async def test_a_commit_after_a_failed_statement(db: sql.Database, db_url: str) -> None:
    """PostgreSQL aborts the whole transaction at a failed statement, and answers the
    COMMIT with ROLLBACK: that is an error here, not a quiet success. MariaDB undoes
    only the failed statement and commits the rest."""
    session = await sql.connect(db_url)
    try:
        await session.begin()
        await session.execute("UPDATE seats SET user_id = 5 WHERE id = 2")
        with pytest.raises(sql.DuplicateKey):
            await session.execute("INSERT INTO seats (id) VALUES (1)")
        if session.dialect.engine == "postgresql":
            with pytest.raises(sql.TransactionRolledBack):
                await session.commit()
            assert await db.fetchval("SELECT user_id FROM seats WHERE id = 2") is None
        else:
            await session.commit()
            assert await db.fetchval("SELECT user_id FROM seats WHERE id = 2") == 5
        assert not session.in_transaction
    finally:
        await session.close()


async def test_a_deadlock_is_named_and_run_again(db: sql.Database) -> None:
    """T1 locks 1 then 2, T2 locks 2 then 1: the server kills one, which runs again."""
    both_hold_one = asyncio.Barrier(2)

    def book(first: int, second: int, user: int) -> Any:
        async def work(tx: sql.Session) -> None:
            await tx.execute("UPDATE seats SET user_id = %s WHERE id = %s", (user, first))
            if tx_attempts.setdefault(user, 0) == 0:
                tx_attempts[user] = 1
                await both_hold_one.wait()
            await tx.execute("UPDATE seats SET user_id = %s WHERE id = %s", (user, second))

        return work

    tx_attempts: dict[int, int] = {}
    await asyncio.gather(db.run_transaction(book(1, 2, 10)), db.run_transaction(book(2, 1, 20)))
    assert db.retries["Deadlock"] == 1
    rows = await db.fetch("SELECT user_id FROM seats ORDER BY id")
    assert rows in ([(10,), (10,)], [(20,), (20,)])  # one whole transaction won the last word


async def test_without_retries_the_deadlock_reaches_the_caller(db: sql.Database) -> None:
    both_hold_one = asyncio.Barrier(2)

    async def cross(first: int, second: int) -> None:
        async with db.transaction() as tx:
            await tx.execute("UPDATE seats SET user_id = 0 WHERE id = %s", (first,))
            await both_hold_one.wait()
            await tx.execute("UPDATE seats SET user_id = 0 WHERE id = %s", (second,))

    outcomes = await asyncio.gather(cross(1, 2), cross(2, 1), return_exceptions=True)
    assert sorted(type(o).__name__ for o in outcomes) == ["Deadlock", "NoneType"]
    assert all(o.retryable for o in outcomes if isinstance(o, sql.SQLError))


async def test_a_lock_wait_timeout_and_nowait(db: sql.Database, db_url: str) -> None:
    holder = await sql.connect(db_url)
    waiter = await sql.connect(db_url)
    try:
        await holder.begin()
        await holder.fetch("SELECT * FROM seats WHERE id = 1 FOR UPDATE")
        if waiter.dialect.engine == "mariadb":
            await waiter.execute("SET SESSION innodb_lock_wait_timeout = 1")
        else:
            await waiter.execute("SET lock_timeout = '300ms'")
        await waiter.begin()
        with pytest.raises(sql.LockWaitTimeout):
            await waiter.fetch("SELECT * FROM seats WHERE id = 1 FOR UPDATE")
        await waiter.rollback()
        await waiter.begin()
        with pytest.raises(sql.LockWaitTimeout):
            await waiter.fetch("SELECT * FROM seats WHERE id = 1 FOR UPDATE NOWAIT")
        await waiter.rollback()
        await waiter.begin()  # SKIP LOCKED passes the locked row by
        assert await waiter.fetch("SELECT id FROM seats FOR UPDATE SKIP LOCKED") == [(2,)]
        await waiter.rollback()
    finally:
        await holder.close()
        await waiter.close()


async def test_serialization_failure_on_postgres(postgres_db: str) -> None:
    async with sql.Database(postgres_db) as db:
        await db.execute("CREATE TABLE c (id int PRIMARY KEY, n int)")
        await db.execute("INSERT INTO c VALUES (1, 0)")
        first = await sql.connect(postgres_db)
        second = await sql.connect(postgres_db)
        try:
            await first.begin("REPEATABLE READ")
            await second.begin("REPEATABLE READ")
            assert await first.fetchval("SELECT n FROM c") == 0
            assert await second.fetchval("SELECT n FROM c") == 0
            await first.execute("UPDATE c SET n = n + 1")
            await first.commit()
            with pytest.raises(sql.SerializationFailure) as caught:
                await second.execute("UPDATE c SET n = n + 1")
            assert caught.value.code == "40001"
            assert caught.value.retryable
        finally:
            await first.close()
            await second.close()


async def test_a_killed_session_is_connection_lost(db: sql.Database, db_url: str) -> None:
    victim = await sql.connect(db_url)
    try:
        pid = await victim.server_id()
        if victim.dialect.engine == "mariadb":
            await db.execute(f"KILL {pid}")
        else:
            await db.execute("SELECT pg_terminate_backend(%s)", (pid,))
        await asyncio.sleep(0.2)
        with pytest.raises(sql.ConnectionLost):
            await victim.fetch("SELECT 1")
    finally:
        await victim.close()


async def test_server_id_names_the_session_in_the_servers_own_views(
    db: sql.Database, db_url: str
) -> None:
    first, second = await sql.connect(db_url), await sql.connect(db_url)
    try:
        ids = [await first.server_id(), await second.server_id()]
        assert ids[0] != ids[1]
        if first.dialect.engine == "mariadb":
            seen = "SELECT ID FROM information_schema.PROCESSLIST WHERE ID IN (%s, %s)"
        else:
            seen = "SELECT pid FROM pg_stat_activity WHERE pid IN (%s, %s)"
        assert sorted(row[0] for row in await db.fetch(seen, ids)) == sorted(ids)
    finally:
        await first.close()
        await second.close()


@pytest.mark.parametrize("scheme", ["mysql://root", "postgresql://postgres"])
async def test_a_server_that_is_not_there(scheme: str, unused_port: int) -> None:
    url = f"{scheme}@127.0.0.1:{unused_port}/x"
    with pytest.raises(sql.DatabaseUnavailable) as caught:
        await sql.Database(url).open()
    message = str(caught.value)
    assert f"127.0.0.1:{unused_port}" in message
    assert "\n" not in message


# -- databases -----------------------------------------------------------------------


@pytest.mark.parametrize("server", ["mysql_url", "postgres_url"])
async def test_ensure_scratch_and_drop(server: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue(server)
    async with sql.scratch_database(url, prefix="sqltest") as scratch:
        assert sql.database_of(scratch).startswith("sqltest_")
        assert await sql.ensure_database(scratch) == scratch  # there already: fine
        async with sql.Database(scratch) as db:
            await sql.ensure_schema(db, ["CREATE TABLE IF NOT EXISTS t (id INT)"], lock="t")
            await asyncio.gather(  # many processes starting at once
                *(
                    sql.ensure_schema(db, ["CREATE TABLE IF NOT EXISTS u (id INT)"], lock="u")
                    for _ in range(4)
                )
            )
            assert await db.fetch("SELECT * FROM u") == []
    with pytest.raises(sql.DatabaseUnavailable):
        await sql.Database(scratch).open()  # dropped


async def test_a_url_without_a_database_gets_the_default(mysql_url: str) -> None:
    url = await sql.ensure_database(sql.with_database(mysql_url, ""), default="sdlab_sqltest")
    try:
        assert sql.database_of(url) == "sdlab_sqltest"
        async with sql.Database(url) as db:
            assert await db.fetchval("SELECT DATABASE()") == "sdlab_sqltest"
    finally:
        await sql.drop_database(url)


async def test_an_aborted_session_is_broken_and_its_locks_are_freed(db_url: str) -> None:
    holder, other = await sql.connect(db_url), await sql.connect(db_url)
    mariadb = holder.dialect.engine == "mariadb"
    take = "SELECT GET_LOCK('t', 0)" if mariadb else "SELECT pg_try_advisory_lock(42)"
    try:
        assert not holder.broken
        assert await holder.fetchval(take)
        assert not await other.fetchval(take)
        holder.abort()  # no goodbye: the server sees the socket close
        assert holder.broken
        for _ in range(50):  # the server notices within moments
            if await other.fetchval(take):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the aborted session's lock was not freed")
    finally:
        await holder.close()
        await other.close()
