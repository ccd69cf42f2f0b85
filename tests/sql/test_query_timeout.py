"""A pooled query on a frozen server (SIGSTOP): a named error after `query_timeout`, and
the connection it was waiting on is discarded, not lent again."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

import psutil
import pytest

from sdlab import sql
from sdlab.infra.instance import Instance
from sdlab.infra.pytest_plugin import Servers


@pytest.fixture(params=["mariadb", "postgres"])
def frozen_url(request: pytest.FixtureRequest, servers: Servers) -> tuple[str, Instance]:
    """A private server of each engine, to freeze; its URL and its instance."""
    (instance,) = getattr(servers, request.param)(1)
    return instance.url, instance


@contextlib.contextmanager
def frozen(instance: Instance) -> Iterator[None]:
    """SIGSTOP the server and every process under it. Not `Instance.pause()`, which
    stops the process group: each PostgreSQL backend makes a session of its own
    (setsid), so the sessions already open would go on answering."""
    assert instance.pid is not None
    server = psutil.Process(instance.pid)
    family = [server, *server.children(recursive=True)]
    for process in family:
        process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for process in family:
            process.send_signal(signal.SIGCONT)


async def test_a_query_on_a_frozen_server_times_out_and_its_connection_is_discarded(
    frozen_url: tuple[str, Instance],
) -> None:
    url, instance = frozen_url
    async with sql.Database(url, min_size=1, max_size=1, query_timeout=0.5) as db:
        async with db.session() as s:
            before = await s.server_id()
        with frozen(instance):
            async with asyncio.timeout(10):  # without query_timeout: for as long as it is frozen
                with pytest.raises(
                    sql.QueryTimeout, match=r"no answer within query_timeout \(0.5 s\)"
                ) as failure:
                    await db.fetchval("SELECT 1")
            assert failure.value.code is None
        async with db.session() as s:  # a new connection: the frozen one was not lent again
            assert await s.fetchval("SELECT 1") == 1
            assert await s.server_id() != before
        assert db.pool.stats()["connections_lost"] == 1


async def test_a_database_without_query_timeout_waits_for_the_frozen_server(
    frozen_url: tuple[str, Instance],
) -> None:
    """The hazard, for the record: the pool's `timeout` bounds the wait for a connection,
    not for an answer."""
    url, instance = frozen_url
    async with sql.Database(url, min_size=1, max_size=1, timeout=0.5) as db:
        await db.fetchval("SELECT 1")
        with frozen(instance), pytest.raises(TimeoutError):
            async with asyncio.timeout(2):
                await db.fetchval("SELECT 1")


def test_query_timeout_must_be_positive(mysql_url: str) -> None:
    with pytest.raises(ValueError, match="query_timeout must be positive"):
        sql.Database(mysql_url, query_timeout=0)
