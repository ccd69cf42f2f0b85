"""One error path: a server that cannot be reached is one line naming the service, the
address and the cause, exit 1, whether a flag or an `SDLAB_*_URL` gave the address."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.helpers import sdlab

REFUSED = "connection refused (nothing listens there)"


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port that refuses connections: bound here, so that nobody else takes it on this
    shared machine, but not listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def one_line(done: object) -> str:
    assert done.returncode == 1, (done.stdout, done.stderr)  # type: ignore[attr-defined]
    lines = done.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1, done.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in done.stdout  # type: ignore[attr-defined]
    return lines[0]


# (service, the command with the address in a flag, `{port}` for the closed port)
BY_FLAG = [
    ("MariaDB", ["checkin", "book", "--users", "2", "--db", "mysql://root@127.0.0.1:{port}/"]),
    (
        "PostgreSQL",
        ["checkin", "book", "--users", "2", "--db", "postgresql://postgres@127.0.0.1:{port}/x"],
    ),
    ("MariaDB", ["ids", "gen", "ticket", "--db", "mysql://root@127.0.0.1:{port}/"]),
    ("MariaDB", ["kv", "serve", "--no-http", "--db", "mysql://root@127.0.0.1:{port}/x"]),
    (
        "RabbitMQ",
        ["brokers", "hello", "produce", "--broker", "amqp://guest:guest@127.0.0.1:{port}/"],
    ),
    ("Kafka", ["brokers", "kafka", "lag", "--broker", "kafka://127.0.0.1:{port}"]),
    ("Kafka", ["hashtags", "extractor", "--broker", "kafka://127.0.0.1:{port}"]),
    (
        "PostgreSQL",
        ["hashtags", "status", "--db", "postgresql://postgres@127.0.0.1:{port}/x"],
    ),
    (
        "the polling service",
        ["polling", "watch", "server-1", "--service-url", "http://127.0.0.1:{port}"],
    ),
    (
        "the sharding service",
        ["sharding", "reshard", "--to", "2", "--service-url", "http://127.0.0.1:{port}"],
    ),
]


@pytest.mark.parametrize(("service", "command"), BY_FLAG, ids=[" ".join(c[:2]) for _, c in BY_FLAG])
def test_a_server_given_by_a_flag_is_one_line(
    service: str, command: list[str], dead_port: int
) -> None:
    done = sdlab(*(arg.format(port=dead_port) for arg in command), timeout=60)
    assert one_line(done) == f"sdlab: cannot reach {service} at 127.0.0.1:{dead_port}: {REFUSED}"


def test_a_redis_given_by_a_flag_is_one_line(mysql_db: str, dead_port: int) -> None:
    redis = f"redis://127.0.0.1:{dead_port}/0"
    done = sdlab("polling", "serve", "--port", "1", "--db", mysql_db, "--redis", redis)
    assert one_line(done) == f"sdlab: cannot reach Redis at 127.0.0.1:{dead_port}: {REFUSED}"


# (service, its variable, its URL with `{port}`, a command that uses the service)
BY_ENVIRONMENT = [
    (
        "MariaDB",
        "SDLAB_MYSQL_URL",
        "mysql://root@127.0.0.1:{port}/",
        ["checkin", "book", "--db", "mysql"],
    ),
    (
        "PostgreSQL",
        "SDLAB_POSTGRES_URL",
        "postgresql://postgres@127.0.0.1:{port}/postgres",
        ["checkin", "book", "--db", "postgres"],
    ),
    ("Redis", "SDLAB_REDIS_URL", "redis://127.0.0.1:{port}/0", ["ids", "gen", "snowflake"]),
    (
        "RabbitMQ",
        "SDLAB_RABBITMQ_URL",
        "amqp://guest:guest@127.0.0.1:{port}/",
        ["brokers", "hello", "produce"],
    ),
    ("Kafka", "SDLAB_KAFKA_URL", "kafka://127.0.0.1:{port}", ["brokers", "kafka", "lag"]),
]


@pytest.mark.parametrize(
    ("service", "variable", "url", "command"),
    BY_ENVIRONMENT,
    ids=[v for _, v, _, _ in BY_ENVIRONMENT],
)
def test_a_server_given_by_the_environment_is_one_line(
    service: str, variable: str, url: str, command: list[str], dead_port: int
) -> None:
    done = sdlab(*command, env={variable: url.format(port=dead_port)}, timeout=60)
    assert one_line(done) == (
        f"sdlab: cannot reach {service} at 127.0.0.1:{dead_port}: {REFUSED}; "
        f"{variable} points there; unset it to let sdlab find or start one"
    )


def test_the_old_spelling_warns_then_fails_the_same_way(dead_port: int) -> None:
    done = sdlab("kv", "serve", "--backend", f"mysql://root@127.0.0.1:{dead_port}/x", "--no-http")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "warning: --backend is deprecated, use --db",
        f"sdlab: cannot reach MariaDB at 127.0.0.1:{dead_port}: {REFUSED}",
    ]
