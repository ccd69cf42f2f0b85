"""The floor of a fan-out: the least any server can do to tell K held clients of a change.

    python -m sdlab.bench.floor poll        # long polls: one HTTP response per held request
    python -m sdlab.bench.floor sse         # SSE: one event to every open stream

A bare uvloop server, alone in its process: no framework, no parsing beyond finding the
end of a request, no task per client. It holds every connection's request (`poll`) or
answers it with SSE headers and keeps the stream (`sse`); when this process's standard
input says `fire PAYLOAD`, it encodes one answer (a 200 with PAYLOAD as its JSON body, or
one SSE event whose data is PAYLOAD, in a chunk) once, and writes those same bytes to
every transport in one pass. A long poller asks again after its answer and is held
again, as it would be by a real server. So what a client measures against this server
is the kernel's loopback TCP, the event loop's write and read, and the clients' own
work: the floor any server with these clients on this machine stands on.

Experiments run it with the same client processes, the same K and the same trigger as
the system they measure (`FloorProcess`), and report that system's percentiles as
ratios to it. Control lines on standard input, answers on standard output:

    listening PORT                     (printed once, at start)
    held            -> held N          (connections holding a request or a stream)
    fire PAYLOAD    -> fired N         (after the one pass: N transports written to)
    cpu             -> cpu SECONDS     (this process's time.process_time())
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
"""The response a stream opens with (the SSE floor); its events follow as chunks."""


class Floor:
    """The held transports, and the one pass that writes a change to them."""

    def __init__(self, mode: str) -> None:
        if mode not in ("poll", "sse"):
            raise ValueError(f"mode should be poll or sse, got {mode!r}")
        self.mode = mode
        self.held: dict[Held, None] = {}  # insertion-ordered: first held, first answered
        self.events = 0

    def answer(self, payload: bytes) -> bytes:
        """The bytes every held client gets for `payload`: encoded once per change."""
        if self.mode == "poll":
            return (
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(payload), payload)
            )
        self.events += 1
        event = b"id: %d\ndata: %s\n\n" % (self.events, payload)
        return b"%x\r\n%s\r\n" % (len(event), event)

    def fire(self, payload: bytes) -> int:
        data = self.answer(payload)
        held = self.held
        if self.mode == "poll":  # answered: each is held again when it asks again
            self.held = {}
        for client in held:
            client.transport.write(data)
        return len(held)


class Held(asyncio.Protocol):
    """One client connection: its request is held (poll) or its stream kept (sse)."""

    def __init__(self, floor: Floor) -> None:
        self.floor = floor
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        end = buffer.rfind(b"\r\n\r\n")  # GETs have no body: a request ends there
        if end < 0:
            self.buffer = buffer
            return
        self.buffer = buffer[end + 4 :]
        if self.floor.mode == "sse" and self not in self.floor.held:
            self.transport.write(SSE_HEAD)
        self.floor.held[self] = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.floor.held.pop(self, None)


async def serve(mode: str, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    floor = Floor(mode)
    server = await loop.create_server(lambda: Held(floor), host, port, backlog=8192)
    gc.freeze()  # as the services do: what is left to collect is the connections
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout
    out.write(f"listening {server.sockets[0].getsockname()[1]}\n")
    out.flush()
    while line := await reader.readline():
        command, _, payload = line.rstrip(b"\n").partition(b" ")
        if command == b"fire":
            reply = f"fired {floor.fire(payload)}"
        elif command == b"held":
            reply = f"held {len(floor.held)}"
        elif command == b"cpu":
            reply = f"cpu {time.process_time()}"
        else:
            reply = f"unknown command {command!r}"
        out.write(reply + "\n")
        out.flush()
    server.close()


class FloorProcess:
    """The floor server in a process of its own, driven from an experiment:

    async with FloorProcess.running("poll") as floor:
        ...start K clients on floor.port...
        await floor.until_held(K)
        await floor.fire(b'{"version": 1, ...}')
    """

    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    @asynccontextmanager
    async def running(cls, mode: str, host: str = "127.0.0.1") -> AsyncIterator[FloorProcess]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sdlab.bench.floor", mode, "--host", host,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            first = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().split()
            if first[:1] != ["listening"]:
                raise RuntimeError(f"the floor server said {first!r}, not 'listening PORT'")
            yield cls(process, int(first[1]))
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()

    async def _ask(self, line: bytes) -> str:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(line + b"\n")
        await self.process.stdin.drain()
        return (await self.process.stdout.readline()).decode().strip()

    async def fire(self, payload: bytes) -> int:
        """Write `payload` to every held client; return once the pass is done, with how
        many there were. (A payload is one line: no newline in it.)"""
        if b"\n" in payload:
            raise ValueError("a floor payload is one line")
        return int((await self._ask(b"fire " + payload)).split()[1])

    async def held(self) -> int:
        return int((await self._ask(b"held")).split()[1])

    async def cpu(self) -> float:
        """CPU seconds the floor server has used (its own process_time())."""
        return float((await self._ask(b"cpu")).split()[1])

    async def until_held(self, count: int, timeout: float = 120) -> None:
        """Until `count` clients are held (RuntimeError if more are)."""
        async with asyncio.timeout(timeout):
            while (held := await self.held()) < count:  # noqa: ASYNC110 - another process's state
                await asyncio.sleep(0.02)
        if held > count:
            raise RuntimeError(f"the floor server holds {held} clients; expected {count}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("poll", "sse"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    args = parser.parse_args(argv)
    runner = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        runner = uvloop.run
    runner(serve(args.mode, args.host, args.port))


if __name__ == "__main__":
    main()
