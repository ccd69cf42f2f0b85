"""SSE clients for the benchmark, meant to run in a process of their own:

    python -m sdlab.streamlogs.loadgen HOST PORT PATH --clients 1000 --lines 40

Each client is a raw asyncio socket (an `asyncio.Protocol`, on uvloop when it is
installed): a GET, then it scans what arrives for the benchmark's lines, `bench <seq>
<monotonic ns when written>`, and records now minus then. That is the least work a
client can do per line, so 1,000 of them cost the machine little beside the server;
an HTTP library per client (httpx) would spend more per event than the server does.
CLOCK_MONOTONIC is one clock for every process of the machine, so the writer's stamp
and the client's reading compare directly.

It prints JSON lines on stdout: `{"ready": n, "failed": [...]}` once every client has
its response headers; then, when every client has every line (never, with --lines 0:
clients that only watch), or "stop" arrives on stdin, or --timeout passes,
`{"latency": <Latency.encode()>, "received": {seq: count}, "stopped_ns": ...}`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import time
from collections import Counter
from typing import cast

from sdlab.latency import Latency

MARKER = re.compile(rb"data: bench (\d+) (\d+)")
CONNECT_AT_ONCE = 100


class Client(asyncio.Protocol):
    """One SSE client: counts the benchmark lines it receives and their latency."""

    def __init__(self, request: bytes, run: Run) -> None:
        self.request = request
        self.run = run
        self.headers: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.buffer = b""
        self.lines = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transport is a Transport in all but its class (not a subclass).
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        buffer = self.buffer + data
        if not self.headers.done():
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            self.headers.set_result(int(buffer[9:12]))
            buffer = buffer[end + 4 :]
        # Events end with a blank line; HTTP chunk framing lies between events, never
        # inside one, and the pattern cannot match it.
        cut = buffer.rfind(b"\n\n")
        if cut < 0:
            self.buffer = buffer
            return
        for seq, sent in MARKER.findall(buffer, 0, cut):
            self.run.record(int(seq), now - int(sent))
            self.lines += 1
        self.buffer = buffer[cut + 2 :]
        if self.lines == self.run.lines > 0:
            self.run.one_done()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.headers.done():
            self.headers.set_exception(exc or ConnectionError("closed before the headers"))


class Run:
    """Every client's lines, in one histogram."""

    def __init__(self, clients: int, lines: int) -> None:
        self.clients = clients
        self.lines = lines
        self.latency = Latency()
        self.received: Counter[int] = Counter()
        self.slowest: dict[int, int] = {}  # seq -> the latest arrival's latency
        self.complete = 0
        self.all_done = asyncio.Event()

    def record(self, seq: int, ns: int) -> None:
        self.latency.record(ns)
        self.received[seq] += 1
        if ns > self.slowest.get(seq, 0):
            self.slowest[seq] = ns

    def one_done(self) -> None:
        self.complete += 1
        if self.complete == self.clients:
            self.all_done.set()


async def main(host: str, port: int, path: str, clients: int, lines: int, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    run = Run(clients, lines)
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
        "Cache-Control: no-cache\r\n\r\n"
    ).encode()
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)
    opened: list[Client] = []
    failed: list[str] = []

    async def connect() -> None:
        async with gate:
            try:
                _, client = await loop.create_connection(lambda: Client(request, run), host, port)
                opened.append(client)
                status = await asyncio.wait_for(client.headers, 30)
                if status != 200:
                    failed.append(f"HTTP {status}")
            except (OSError, TimeoutError) as exc:
                failed.append(f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(connect() for _ in range(clients)))
    print(json.dumps({"ready": len(opened) - len(failed), "failed": failed[:5]}), flush=True)

    stop = asyncio.create_task(_stdin_says_stop())
    done = asyncio.create_task(run.all_done.wait())
    await asyncio.wait((stop, done), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    stopped = time.monotonic_ns()
    for task in (stop, done):
        task.cancel()
    for client in opened:
        if client.transport is not None:
            client.transport.abort()
    result = {
        "latency": run.latency.encode(),
        "received": dict(run.received),
        "slowest": run.slowest,
        "complete": run.complete,
        "stopped_ns": stopped,
    }
    print(json.dumps(result), flush=True)


async def _stdin_says_stop() -> None:
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    while line := await reader.readline():
        if line.strip() == b"stop":
            return


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("path")
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument(
        "--lines", type=int, required=True, help="lines each client expects (0: just watch)"
    )
    parser.add_argument("--timeout", type=float, default=600.0)
    return parser.parse_args()


if __name__ == "__main__":
    args = _parse()
    runner = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        runner = uvloop.run
    runner(main(args.host, args.port, args.path, args.clients, args.lines, args.timeout))
