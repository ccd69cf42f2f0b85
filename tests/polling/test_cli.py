"""`sdlab polling` as a user runs it: failures in one line, the watch command."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from sdlab.infra.process import ServerProcess, sdlab_command
from sdlab.polling import Delays, Store
from sdlab.polling.model import seed_ids
from sdlab.polling.service import ServiceProcess
from tests.helpers import sdlab


@pytest.mark.slow  # three processes
def test_an_unreachable_database_is_one_line(unused_port: int) -> None:
    for url, says in [
        (f"mysql://root@127.0.0.1:{unused_port}/", "sdlab: cannot reach MariaDB at 127.0.0.1:"),
        (
            f"postgresql://postgres@127.0.0.1:{unused_port}/x",
            "sdlab: cannot reach PostgreSQL at 127.0.0.1:",
        ),
        ("sqlite:///tmp/x.db", "error: database URL 'sqlite:///tmp/x.db': scheme should be"),
    ]:
        done = sdlab("polling", "serve", "--db", url)
        assert done.returncode == 1
        assert done.stderr.startswith(says), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_an_unreachable_redis_is_one_line(mysql_db: str, unused_port: int) -> None:
    done = sdlab(
        "polling", "serve", "--db", mysql_db, "--redis", f"redis://127.0.0.1:{unused_port}/0"
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"sdlab: cannot reach Redis at 127.0.0.1:{unused_port}: "
        "connection refused (nothing listens there)"
    ), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_serve_defaults_to_the_mariadb_and_redis_sdlab_finds(
    mysql_url: str, redis_url: str, namespace: str, unused_port: int
) -> None:
    """No --db and no --redis: MariaDB (database `sdlab_polling`) and Redis from infra.
    A table of the test's own, so that it meets no other service's servers."""
    url = f"http://127.0.0.1:{unused_port}"
    command = sdlab_command("polling", "serve", "--port", str(unused_port), "--table", namespace)
    try:
        with ServerProcess(command, ready_url=f"{url}/stats", name="polling service") as service:
            stats = httpx.get(f"{url}/stats").json()
            created = httpx.post(f"{url}/create/server-1")
            listed = httpx.get(f"{url}/servers").json()
            printed = service.output()
    finally:
        asyncio.run(_drop(mysql_url, namespace))
    where = mysql_url.partition("@")[2].partition("/")[0]
    assert f"mariadb at {where}, table sdlab_polling.{namespace}" in printed
    assert (
        stats["channel"]
        == f"Redis channel 'sdlab:polling:sdlab_polling:{namespace}' at {redis_url}"
    )
    assert stats["subscribed"] is True
    assert created.status_code == 202
    assert [s["server_id"] for s in listed["servers"]] == seed_ids(5)
    assert listed["version"] == created.json()["version"] == 6


async def _drop(mysql_url: str, table: str) -> None:
    async with await Store.connect(mysql_url, table) as store:
        await store.drop()


@pytest.mark.slow
def test_watch_follows_a_creation_to_done(mysql_db: str, redis_url: str) -> None:
    with ServiceProcess(mysql_db, redis_url=redis_url, delays=Delays(0.2, 0.2)) as service:
        done = sdlab("polling", "watch", "server-1", "--create", "--service-url", service.url)
        assert done.returncode == 0, done.stderr
        statuses = [line.split()[1] for line in done.stdout.splitlines()]
        assert statuses == ["TO_DO", "IN_PROGRESS", "DONE"]
        assert "ms after the change" in done.stdout
        again = sdlab("polling", "watch", "server-1", "--create", "--service-url", service.url)
        assert again.returncode == 1
        assert again.stderr.startswith("error: server 'server-1' is already created")
