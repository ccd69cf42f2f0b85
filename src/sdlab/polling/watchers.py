"""Clients that watch one server, in a process of their own, for the experiment.

    python -m sdlab.polling.watchers URL SERVER_ID --clients 250 --since 7 --long
    python -m sdlab.polling.watchers URL SERVER_ID --clients 250 --since 7 --interval 0.5

Each client follows the server until it is DONE, by long polling or by short polling
every `interval` seconds (each client at a random phase), on a keep-alive connection of
its own. The process prints `ready` once every client has had its first answer (short)
or sent its first poll (long), then, when all are done, one JSON line: for each client,
its requests and, for each version it saw, `[version, status, answered, changed]` (Unix
times), under "clients", and the CPU time this process used from `ready` to the end
under "cpu (s)" (so that the clients' cost can be shown beside the server's). The
change's time is the database's clock; on one machine it is the same clock
as this process's, and the answer's time is taken as its last byte is parsed.

The clients share the machine's cores with the service they measure, so each request
must cost them little: a bare asyncio protocol with httptools' parser (the one uvicorn
uses) costs a fraction of what aiohttp does per request (120 us of client CPU for each
answer, more than the service spent on it), and httpx costs more still.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections.abc import Awaitable
from datetime import datetime
from typing import Any, cast
from urllib.parse import urlsplit

import httptools


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection that sends a GET and waits for its answer."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.answer: asyncio.Future[tuple[int, bytes, float]] | None = None
        self.body: list[bytes] = []

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        _, connection = await asyncio.get_running_loop().create_connection(cls, host, port)
        return connection

    async def get(self, request: bytes) -> tuple[int, bytes, float]:
        """Send a whole request; return (status, body, time.time() at its last byte)."""
        assert self.transport is not None
        self.body = []
        self.answer = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.answer

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transport is a Transport in all but its class (not a subclass).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.answer is not None and not self.answer.done():
            status = self.parser.get_status_code()
            self.answer.set_result((status, b"".join(self.body), time.time()))

    def _fail(self, exc: Exception) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(exc)
        self.close()


async def watch(
    url: str,
    server_id: str,
    since: int,
    interval: float | None,
    timeout: float,
    started: asyncio.Event,
    ready: list[int],
    count: int,
) -> dict[str, Any]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = f"Host: {parts.netloc}\r\n\r\n".encode()
    seen: list[list[Any]] = []
    requests = 0
    errors = 0
    if interval is not None:
        await asyncio.sleep(random.uniform(0, interval))  # clients out of step, as in life
    next_tick = time.monotonic()
    first = True
    connection: Connection | None = None
    try:
        while True:
            if interval is None:
                target = f"/long/status/{server_id}?since={since}&timeout={timeout}"
            else:
                target = f"/short/status/{server_id}"
            requests += 1
            try:
                if connection is None:
                    connection = await Connection.open(host, port)
                answering: Awaitable[tuple[int, bytes, float]] = connection.get(
                    f"GET {target} HTTP/1.1\r\n".encode() + head
                )
                if first and interval is None:
                    # Long polls park without answering: count the client as ready once
                    # its request is on the wire (the driver then waits for the server's
                    # count).
                    answering = asyncio.ensure_future(answering)
                    await asyncio.sleep(0)
                    first = False
                    ready[0] += 1
                    if ready[0] == count:
                        started.set()
                status, body, received = await answering
            except OSError:
                errors += 1
                if connection is not None:
                    connection.close()
                    connection = None
                await asyncio.sleep(0.1)
                continue
            if first:
                first = False
                ready[0] += 1
                if ready[0] == count:
                    started.set()
            if status == 200:
                server = json.loads(body)
                if server["version"] > since:
                    since = server["version"]
                    changed = datetime.fromisoformat(server["changed_at"]).timestamp()
                    seen.append([since, server["status"], received, changed])
                    if server["status"] == "DONE":
                        return {"requests": requests, "errors": errors, "seen": seen}
            elif status != 304:
                errors += 1
            if interval is not None:
                next_tick += interval
                await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
    finally:
        if connection is not None:
            connection.close()


async def main(args: argparse.Namespace) -> None:
    url = args.url.rstrip("/")
    started = asyncio.Event()
    ready = [0]
    clients = [
        asyncio.create_task(
            watch(
                url,
                args.server_id,
                args.since,
                args.interval,
                args.timeout,
                started,
                ready,
                args.clients,
            )
        )
        for _ in range(args.clients)
    ]
    await started.wait()
    print("ready", flush=True)
    cpu = time.process_time()
    results = await asyncio.wait_for(asyncio.gather(*clients), args.deadline)
    json.dump({"cpu (s)": time.process_time() - cpu, "clients": results}, sys.stdout)
    print(flush=True)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("server_id")
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--since", type=int, required=True, help="the version before the watch")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--long", action="store_true", help="long polling")
    mode.add_argument("--interval", type=float, help="short polling every INTERVAL seconds")
    parser.add_argument("--timeout", type=float, default=30.0, help="long poll timeout")
    parser.add_argument("--deadline", type=float, default=120.0, help="give up after")
    return parser.parse_args(argv)


if __name__ == "__main__":
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(parse(sys.argv[1:])))
