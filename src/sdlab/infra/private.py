"""Extra private servers on demand, for systems and tests that need more than one.

    from sdlab import infra

    with infra.mariadb(2) as (source, replica):      # two servers, binlog on
        ...                                          # source.url, replica.port, ...
    with infra.redis(5, durable=True) as quorum: ... # five independent Redis, fsynced
    with infra.kafka() as broker: ...                # a Kafka-protocol broker

Each instance runs on its own free loopback port with its own data directory under
`<state_dir>/run/`; leaving the `with` block (or `close()`) stops exactly the
processes it started and removes their data.

A command that starts servers for later commands (`sdlab replica up`) keeps them as a
group: `mariadb(3, keep="replica")` puts them under `<state_dir>/managed/replica/`,
where they outlive the process; `kept("replica")` finds them again, `release("replica")`
stops them and removes their data, and so does `sdlab infra down`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sdlab.infra.instance import (
    Instance,
    Instances,
    close_group,
    group_members,
    start,
    start_many,
)
from sdlab.infra.resolve import state_root
from sdlab.infra.services import SERVICES

Options = Mapping[str, Any] | None


def mariadb(n: int = 1, *, options: Options = None, keep: str | None = None) -> Instances:
    """`n` MariaDB servers, each with binary logging on and server_id equal to its port,
    ready to be a replication source or replica. `options` are extra `mariadbd` flags,
    e.g. `{"auto-increment-increment": 2}`. `keep`: a group name; the servers then
    outlive this process (see `kept`)."""
    return start_many(SERVICES["mysql"], n, options=options, root=state_root(), group=keep)


def kept(group: str) -> Instances:
    """The servers kept under `group` by an earlier process, by port (empty if none).
    Their `kill()`, `start()`, `pause()` and `resume()` work as on one's own."""
    return group_members(state_root(), group)


def release(group: str) -> Instances:
    """Stop the servers kept under `group` and remove their data; the ones stopped."""
    return close_group(state_root(), group)


def postgres(n: int = 1, *, options: Options = None) -> Instances:
    """`n` PostgreSQL servers (trust auth, user `postgres`); `options` are `-c` settings."""
    return start_many(SERVICES["postgres"], n, options=options, root=state_root())


DURABLE_REDIS = {"appendonly": "yes", "appendfsync": "always"}
"""Every write in the append-only file and fsynced before the reply: what Redlock needs."""


def redis(n: int = 1, *, durable: bool = False, options: Options = None) -> Instances:
    """`n` independent Redis servers, without persistence (scratch space) unless
    `durable`: then every write is fsynced to the append-only file before Redis
    answers, and survives a restart or a crash (what `sdlab.locks.Redlock` asks for)."""
    settings = {**(DURABLE_REDIS if durable else {}), **(options or {})}
    return start_many(SERVICES["redis"], n, options=settings, root=state_root())


def rabbitmq(*, options: Options = None) -> Instance:
    """A RabbitMQ node of its own (takes a few seconds to boot); `options` are
    `RABBITMQ_*` environment variables."""
    return start(SERVICES["rabbitmq"], options=options, root=state_root())


def kafka(*, options: Options = None) -> Instance:
    """A Kafka-protocol broker (tansu, in-memory log); `options` are `tansu broker` flags,
    e.g. `{"storage-engine": "postgres://..."}` for a durable log."""
    return start(SERVICES["kafka"], options=options, root=state_root())
