"""The proxy on real sockets: bytes both ways, half-close, a big transfer under flow
control, the idle timeout, the connection cap, retries, the PROXY header as a backend
sees it, and the graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from sdlab.lb.backends import Address, Pool, State
from sdlab.lb.demo import serve_backends
from sdlab.lb.proxy import Proxy
from sdlab.lb.strategies import RoundRobin

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def backend(handler: Handler) -> AsyncIterator[int]:
    """A backend of the test's own on a free port, serving `handler`."""

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await handler(reader, writer)
        writer.close()

    server = await asyncio.start_server(guarded, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@contextlib.asynccontextmanager
async def proxy_to(*ports: int, **options: Any) -> AsyncIterator[Proxy]:
    pool = Pool(RoundRobin())
    for port in ports:
        pool.add(Address("127.0.0.1", port))
    proxy = Proxy(pool, **options)
    proxy.port = await proxy.listen("127.0.0.1", 0)  # type: ignore[attr-defined]
    try:
        yield proxy
    finally:
        await proxy.shutdown(timeout=1)


async def connect(proxy: Proxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port)  # type: ignore[attr-defined]


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"hello from the backend\n")  # the backend speaks first
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


async def test_bytes_flow_both_ways() -> None:
    async with backend(echo) as port, proxy_to(port) as proxy:
        reader, writer = await connect(proxy)
        assert await reader.readline() == b"hello from the backend\n"
        for line in (b"one\n", b"two\n"):
            writer.write(line)
            assert await reader.readline() == line
        writer.close()
        (only,) = proxy.pool
        assert only.bytes_in == 8
        assert only.bytes_out == len(b"hello from the backend\n") + 8


async def test_client_half_close_still_gets_the_answer() -> None:
    async def count_then_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until the client's EOF
        writer.write(f"got {len(data)} bytes\n".encode())
        await writer.drain()

    async with backend(count_then_answer) as port, proxy_to(port) as proxy:
        reader, writer = await connect(proxy)
        writer.write(b"x" * 1000)
        writer.write_eof()
        assert await reader.read() == b"got 1000 bytes\n"


async def test_backend_half_close_still_gets_the_client_bytes() -> None:
    heard: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def speak_then_listen(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"bye\n")
        writer.write_eof()  # the backend is done sending, not done listening
        heard.set_result(await reader.read())

    async with backend(speak_then_listen) as port, proxy_to(port) as proxy:
        reader, writer = await connect(proxy)
        assert await reader.read() == b"bye\n"  # EOF reached the client
        writer.write(b"still here")
        writer.write_eof()
        assert await asyncio.wait_for(heard, 5) == b"still here"


async def test_a_big_transfer_arrives_whole_both_ways() -> None:
    size = 32 * 2**20
    payload = os.urandom(2**20) * 32

    async with backend(echo) as port, proxy_to(port) as proxy:
        reader, writer = await connect(proxy)
        await reader.readline()

        async def send() -> None:
            for i in range(0, size, 2**20):
                writer.write(payload[i : i + 2**20])
                await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        received = hashlib.sha256()
        got = 0
        while got < size:
            chunk = await reader.read(2**20)
            assert chunk
            received.update(chunk)
            got += len(chunk)
        await sender
        assert received.digest() == hashlib.sha256(payload).digest()


async def test_a_slow_reader_holds_the_backend_back() -> None:
    """Flow control: a client that does not read leaves the rest in the backend."""
    sent = 0

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        chunk = b"y" * 65536
        with contextlib.suppress(ConnectionError):
            while True:
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)

    async with backend(flood) as port, proxy_to(port) as proxy:
        _, writer = await connect(proxy)
        await asyncio.sleep(1.0)
        held = sent
        await asyncio.sleep(0.5)
        assert sent == held  # the backend is blocked, not the proxy buffering all of it
        assert held < 64 * 2**20
        writer.close()


async def test_an_idle_connection_is_cut() -> None:
    async with backend(echo) as port, proxy_to(port, idle_timeout=0.3) as proxy:
        reader, _ = await connect(proxy)
        await reader.readline()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert proxy.stats.idle_closed == 1


async def test_over_the_cap_a_client_waits_for_a_free_slot() -> None:
    connected = 0

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connected
        connected += 1
        await echo(reader, writer)

    async with backend(count) as port, proxy_to(port, max_connections=2) as proxy:
        first, second, third = [await connect(proxy) for _ in range(3)]
        for reader, _ in (first, second):
            await reader.readline()
        await asyncio.sleep(0.2)
        assert connected == 2
        assert proxy.stats.queued == 1
        third[1].write(b"waiting\n")  # kept unread until a slot frees
        first[1].close()
        assert await asyncio.wait_for(third[0].readline(), 5) == b"hello from the backend\n"
        assert await asyncio.wait_for(third[0].readline(), 5) == b"waiting\n"
        assert connected == 3
        for _, writer in (second, third):
            writer.close()


async def test_a_refused_connect_marks_the_backend_down_and_retries_elsewhere() -> None:
    dead = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    dead_port = dead.sockets[0].getsockname()[1]
    dead.close()
    await dead.wait_closed()
    async with backend(echo) as port, proxy_to(dead_port, port) as proxy:
        for _ in range(4):
            reader, writer = await connect(proxy)
            assert await reader.readline() == b"hello from the backend\n"
            writer.close()
        down = proxy.pool.get(f"127.0.0.1:{dead_port}")
        assert down.state is State.DOWN
        assert "connect failed" in down.reason
        assert proxy.stats.retries == 1  # once down, it is not tried again
        assert down.failed_connects == 1


async def test_no_backend_up_closes_the_client() -> None:
    async with backend(echo) as port, proxy_to(port) as proxy:
        (only,) = proxy.pool
        proxy.pool.mark_down(only, "test")
        reader, _ = await connect(proxy)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert proxy.stats.no_backend == 1


@pytest.mark.parametrize("version", [1, 2])
async def test_the_backend_sees_the_client_address_in_the_proxy_header(version: int) -> None:
    (server,) = await serve_backends(0, count=1, delay=(0, 0), proxy_protocol=True)
    port = server.sockets[0].getsockname()[1]
    try:
        async with proxy_to(port, send_proxy=version) as proxy:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1",
                proxy.port,  # type: ignore[attr-defined]
                local_addr=("127.0.0.7", 0),
            )
            client_port = writer.get_extra_info("sockname")[1]
            writer.write(b"GET /client HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = await reader.read()
            writer.close()
            assert answer.endswith(f"\r\n\r\n127.0.0.7:{client_port}\n".encode())
    finally:
        server.close()


async def test_the_demo_backend_refuses_a_connection_without_the_header() -> None:
    (server,) = await serve_backends(0, count=1, delay=(0, 0), proxy_protocol=True)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /client HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 400")
    finally:
        server.close()


async def test_shutdown_stops_accepting_and_lets_open_connections_finish() -> None:
    async with backend(echo) as port:
        pool = Pool(RoundRobin())
        pool.add(Address("127.0.0.1", port))
        proxy = Proxy(pool)
        listening = await proxy.listen("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", listening)
        await reader.readline()
        closing = asyncio.create_task(proxy.shutdown(timeout=10))
        await asyncio.sleep(0.1)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", listening)
        writer.write(b"still served\n")
        assert await reader.readline() == b"still served\n"
        assert not closing.done()
        writer.close()
        assert await asyncio.wait_for(closing, 5) == 0  # none cut


async def test_shutdown_cuts_what_is_left_at_the_deadline() -> None:
    async with backend(echo) as port:
        pool = Pool(RoundRobin())
        pool.add(Address("127.0.0.1", port))
        proxy = Proxy(pool)
        listening = await proxy.listen("127.0.0.1", 0)
        reader, _ = await asyncio.open_connection("127.0.0.1", listening)
        await reader.readline()
        assert await proxy.shutdown(timeout=0.2) == 1
        assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_these_tests_run_on_uvloop() -> None:
    import uvloop

    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
