"""Extra private servers: they answer, they break on demand, and they leave nothing behind."""

from __future__ import annotations

import asyncio
import uuid

import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from sdlab import infra
from sdlab.infra.instance import Instance
from sdlab.infra.service import port_is_open, run_sync
from sdlab.infra.services import kafka, mariadb, postgres, redis


async def query(url: str, sql: str) -> list[tuple]:
    conn = await mariadb.connect(url, autocommit=True)
    try:
        async with conn.cursor() as cur:
            await cur.execute(sql)
            return list(await cur.fetchall())
    finally:
        await conn.ensure_closed()


async def produce_and_consume(bootstrap: str) -> bytes:
    topic = f"t{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"g-{topic}", auto_offset_reset="earliest"
    )
    await producer.start()
    await consumer.start()
    try:
        await producer.send_and_wait(topic, b"hello")
        record = await asyncio.wait_for(consumer.getone(), 20)
        return record.value
    finally:
        await consumer.stop()
        await producer.stop()


def assert_gone(server: Instance, pid: int) -> None:
    assert not server.running
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not port_is_open(server.port)
    assert not server.home.exists()


def test_two_mariadb_and_a_kafka_broker_beside_the_local_server() -> None:
    """The acceptance case: with the system MariaDB on 3306 running, two private ones
    and a broker start, each answers its protocol, and teardown leaves nothing."""
    local = infra.status(["mysql"])[0]
    assert local.healthy, local.problem

    with infra.mariadb(2) as servers, infra.kafka() as broker:
        ports = {s.port for s in servers}
        assert len(ports) == 2
        assert local.endpoint.port not in ports
        for server in servers:
            ((port, server_id, log_bin, binlog_format),) = run_sync(
                lambda s=server: query(
                    s.url, "SELECT @@port, @@server_id, @@log_bin, @@binlog_format"
                )
            )
            assert (port, server_id, log_bin, binlog_format) == (server.port, server.port, 1, "ROW")
        bootstrap = kafka.bootstrap_servers(broker.url)
        assert run_sync(lambda: produce_and_consume(bootstrap)) == b"hello"
        started = [(s, s.pid) for s in [*servers, broker]]

    for server, pid in started:
        assert pid is not None
        assert_gone(server, pid)


def test_postgres_and_independent_redis_servers() -> None:
    async def check(pg_url: str, a: str, b: str) -> tuple[int, bytes | None, bytes | None]:
        async with await postgres.connect(pg_url) as conn:
            (value,) = await (await conn.execute("SELECT 40 + 2")).fetchone()
        first, second = redis.connect(a), redis.connect(b)
        await first.set("only-here", "1")
        seen = await first.get("only-here"), await second.get("only-here")
        await first.aclose()
        await second.aclose()
        return value, *seen

    with infra.postgres() as (pg,), infra.redis(2) as (a, b):
        assert run_sync(lambda: check(pg.url, a.url, b.url)) == (42, b"1", None)


def test_kill_is_a_crash_and_start_brings_the_data_back() -> None:
    with infra.mariadb() as (server,):
        run_sync(lambda: query(server.url, "CREATE DATABASE d"))
        run_sync(lambda: query(server.url, "CREATE TABLE d.t (x INT) ENGINE=InnoDB"))
        run_sync(lambda: query(server.url, "INSERT INTO d.t VALUES (42)"))
        port = server.port
        server.kill()
        assert not server.running
        assert not server.answers()
        server.start()
        assert server.port == port
        assert run_sync(lambda: query(server.url, "SELECT x FROM d.t")) == [(42,)]


def test_pause_freezes_a_server_and_resume_thaws_it() -> None:
    async def ping(url: str) -> bool:
        client = redis.connect(url, socket_timeout=0.5)
        try:
            return bool(await client.ping())
        finally:
            await client.aclose()

    with infra.redis() as (server,):
        server.pause()
        with pytest.raises(Exception, match=r"[Tt]imeout"):
            run_sync(lambda: ping(server.url))
        server.resume()
        assert run_sync(lambda: ping(server.url))
        server.pause()
        server.stop()  # a paused server still stops
        assert not server.running


@pytest.mark.slow
def test_a_private_rabbitmq_node() -> None:
    with infra.rabbitmq() as node:
        assert node.answers()
        assert run_sync(lambda: infra.service("rabbitmq").probe(node.url)).startswith("3.")
        pid = node.pid
        assert pid is not None
    assert_gone(node, pid)


def test_fixture_servers_are_closed_after_the_test(servers) -> None:
    (server,) = servers.redis()
    assert server.answers()
    servers.close()
    assert not server.running
    assert not server.home.exists()


def test_options_reach_the_server() -> None:
    with infra.mariadb(options={"auto-increment-increment": 2, "auto-increment-offset": 2}) as (
        server,
    ):
        rows = run_sync(
            lambda: query(server.url, "SELECT @@auto_increment_increment, @@auto_increment_offset")
        )
        assert rows == [(2, 2)]


def test_bad_option_fails_with_the_servers_own_words(state_dir) -> None:
    with pytest.raises(infra.StartFailed) as failure:
        infra.mariadb(options={"no-such-setting": 1})
    message = str(failure.value)
    assert "unknown variable 'no-such-setting=1'" in message  # the server's own error line
    assert failure.value.log is not None
    assert failure.value.log.parent == state_dir / "failed"
    assert "no-such-setting" in failure.value.log.read_text()  # the whole log was kept
    assert not list((state_dir / "run").iterdir())  # but the instance is gone
    infra.down()
    assert not (state_dir / "failed").exists()


def test_a_port_taken_between_our_pick_and_the_servers_bind_is_picked_again(monkeypatch) -> None:
    """A socket bound but not listening answers no probe, yet the server cannot bind its
    port: the server's own "Address already in use" sends the start to another port."""
    import socket

    import port_for

    held = socket.socket()
    held.bind(("127.0.0.1", 0))  # bound, never listening: port_is_open says no
    taken = held.getsockname()[1]
    picks = iter([taken])
    real = port_for.select_random
    monkeypatch.setattr(port_for, "select_random", lambda *a, **k: next(picks, None) or real())
    try:
        with infra.redis() as (server,):
            assert server.port != taken
            assert server.answers()
    finally:
        held.close()
