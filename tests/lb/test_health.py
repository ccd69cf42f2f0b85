"""Active checks (TCP, HTTP with an expected status; rise and fall) and slow start."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from sdlab.lb.backends import Address, Pool, State
from sdlab.lb.health import Check, CheckFailed, HealthChecker, probe
from sdlab.lb.strategies import Weighted


@contextlib.asynccontextmanager
async def http_server(status: int, port: int = 0) -> AsyncIterator[Address]:
    """A server that answers every request with `status` (on `port`; 0: a free one)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", port, reuse_address=True)
    try:
        yield Address("127.0.0.1", server.sockets[0].getsockname()[1])
    finally:
        server.close()


async def closed_port() -> Address:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return Address("127.0.0.1", port)


async def test_http_check_wants_the_expected_status() -> None:
    async with http_server(200) as good, http_server(503) as bad:
        await probe(good, Check(kind="http"))
        with pytest.raises(CheckFailed, match="status 503, not 200"):
            await probe(bad, Check(kind="http"))
        await probe(bad, Check(kind="http", expect=503))
        await probe(bad, Check(kind="tcp"))  # it accepts: TCP is content


async def test_tcp_check_of_a_closed_port_fails() -> None:
    with pytest.raises(CheckFailed, match="tcp check"):
        await probe(await closed_port(), Check(kind="tcp"))


async def test_fall_takes_down_and_rise_brings_back() -> None:
    async with http_server(503) as address:
        pool = Pool(Weighted())
        backend = pool.add(address)
        checker = HealthChecker(pool, Check(kind="http", rise=2, fall=3))
        for expected in (State.UP, State.UP, State.DOWN):
            await checker.check_all()
            assert backend.state is expected
        assert "status 503" in backend.reason
        assert pool.pick("") is None
    async with http_server(200, port=address.port):  # the same backend, healthy again
        for expected in (State.DOWN, State.UP):
            await checker.check_all()
            assert backend.state is expected
        assert pool.pick("") is backend


async def test_a_drained_backend_stays_draining_through_its_checks() -> None:
    async with http_server(200) as address:
        pool = Pool(Weighted())
        pool.add(address)
        backend = pool.drain(str(address))
        await HealthChecker(pool, Check(kind="http")).check_all()
        assert backend.state is State.DRAINING
        assert backend.checks_ok == 1


def test_slow_start_gives_a_returning_backend_a_growing_share() -> None:
    pool = Pool(Weighted(), slow_start=0.5)
    steady = pool.add(Address("127.0.0.1", 1))
    returning = pool.add(Address("127.0.0.1", 2))
    pool.mark_down(returning, "test")
    pool.mark_up(returning, "test")
    assert returning.weight == pytest.approx(0.1, abs=0.05)
    early = Counter(pool.pick("").address.port for _ in range(100))  # type: ignore[union-attr]
    assert early[2] < 20
    time.sleep(0.6)
    assert returning.weight == 1
    late = Counter(pool.pick("").address.port for _ in range(100))  # type: ignore[union-attr]
    assert late[2] == 50
    assert steady.weight == 1
