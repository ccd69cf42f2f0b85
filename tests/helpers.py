"""Helpers shared by the tests."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def sdlab(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the `sdlab` command line as a user would, in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "sdlab", *args],
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def eventually(probe: Callable[[], Awaitable[T]], expected: T, timeout: float = 5.0) -> T:
    """Poll `probe` until it returns `expected` or `timeout` passes; return its last value.

    For facts a server updates asynchronously (a closed connection's backend exits a
    few milliseconds after the client hangs up)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value == expected or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.02)


class Proxy:
    """A TCP proxy in front of a local server, to play a bad network: `delay` holds
    every reply back; `flowing.clear()` stops forwarding (sockets stay open, as in a
    partition); `cut()` drops every connection.

        async with Proxy(6379, delay=0.3) as proxy:
            client = redis.connect(f"redis://127.0.0.1:{proxy.port}/0")
    """

    def __init__(self, target_port: int, *, delay: float = 0.0) -> None:
        self.target = target_port
        self.delay = delay
        self.port = 0
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.flowing.set()
        self.cut()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers += [client_w, server_w]
        for pipe in (
            self._pipe(client_r, server_w, 0.0),
            self._pipe(server_r, client_w, self.delay),
        ):
            task = asyncio.create_task(pipe)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
    ) -> None:
        try:
            while data := await reader.read(65536):
                await self.flowing.wait()
                if delay:
                    await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
