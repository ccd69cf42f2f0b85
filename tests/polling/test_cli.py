"""`sdlab polling` as a user runs it: failures in one line, the watch command."""

from __future__ import annotations

import pytest

from sdlab.polling import Delays
from sdlab.polling.process import ServiceProcess
from tests.helpers import sdlab


@pytest.mark.slow  # three processes
def test_an_unreachable_database_is_one_line(unused_port: int) -> None:
    for url, says in [
        (f"mysql://root@127.0.0.1:{unused_port}/", "error: mariadb at 127.0.0.1:"),
        (f"postgresql://postgres@127.0.0.1:{unused_port}/x", "error: postgresql at 127.0.0.1:"),
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
    assert done.stderr.startswith("error: cannot subscribe to Redis channel"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_watch_follows_a_creation_to_done(mysql_db: str, redis_url: str) -> None:
    with ServiceProcess(mysql_db, redis_url=redis_url, delays=Delays(0.2, 0.2)) as service:
        done = sdlab("polling", "watch", "server-1", "--create", "--url", service.url)
        assert done.returncode == 0, done.stderr
        statuses = [line.split()[1] for line in done.stdout.splitlines()]
        assert statuses == ["TO_DO", "IN_PROGRESS", "DONE"]
        assert "ms after the change" in done.stdout
        again = sdlab("polling", "watch", "server-1", "--create", "--url", service.url)
        assert again.returncode == 1
        assert again.stderr.startswith("error: server 'server-1' is already created")
