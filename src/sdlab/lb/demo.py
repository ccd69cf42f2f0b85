"""The seed's demo backends: HTTP servers that answer every request after a random
200-500 ms, saying which backend answered. With no delay, the fast tiny backend of the
benchmark.

    servers = await serve_backends(8081, count=4, delay=(0.2, 0.5))   # :8081-8084
    ...
    for server in servers: server.close()

`GET /anything` answers `200` with `backend 8081\\n`; HTTP/1.1 keep-alive unless the
request says `Connection: close` (or is HTTP/1.0 without `keep-alive`). With
`proxy_protocol=True` each connection must start with a PROXY protocol header, and
`GET /client` answers the client's address it carried. Hand-written on asyncio's
Protocol (no framework), so that in the benchmark the backend costs little beside the
proxies it measures.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from sdlab.lb import proxy_protocol

Delay = tuple[float, float]
SEED_DELAY: Delay = (0.2, 0.5)
_END = b"\r\n\r\n"


def parse_delay(text: str) -> Delay:
    """`0.3` (always 300 ms) or `0.2-0.5` (uniform between), in seconds."""
    low, _, high = text.partition("-")
    try:
        delay = (float(low), float(high or low))
    except ValueError:
        raise ValueError(f"a delay is SECONDS or LOW-HIGH, not {text!r}") from None
    if not 0 <= delay[0] <= delay[1]:
        raise ValueError(f"a delay is 0 <= LOW <= HIGH, not {text!r}")
    return delay


class DemoBackend(asyncio.Protocol):
    """One connection to a demo backend."""

    __slots__ = ("buffer", "client", "closing", "delay", "name", "proxy_protocol", "transport")

    def __init__(self, name: str, delay: Delay, proxy_protocol: bool) -> None:
        self.name = name
        self.delay = delay
        self.proxy_protocol = proxy_protocol
        self.client: Any = None
        self.buffer = b""
        self.transport: Any = None
        self.closing = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.client = transport.get_extra_info("peername")

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        if self.proxy_protocol:
            if len(buffer) < 16 and b"\r\n" not in buffer:
                self.buffer = buffer
                return
            try:
                self.client, _, buffer = proxy_protocol.parse(buffer)
            except proxy_protocol.BadHeader as exc:
                self.transport.write(_response(400, f"{exc}\n", close=True))
                self.transport.close()
                return
            self.proxy_protocol = False
        while not self.closing:
            end = buffer.find(_END)
            if end < 0:
                break
            head, buffer = buffer[:end], buffer[end + 4 :]
            close = _wants_close(head)
            self.closing = close
            path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b"/"
            low, high = self.delay
            if high > 0:
                asyncio.get_running_loop().call_later(
                    random.uniform(low, high), self._answer, path, close
                )
            else:
                self._answer(path, close)
        self.buffer = buffer

    def _answer(self, path: bytes, close: bool) -> None:
        if self.transport.is_closing():
            return
        if path == b"/client":
            body = f"{self.client[0]}:{self.client[1]}\n" if self.client else "unknown\n"
        else:
            body = self.name
        self.transport.write(_response(200, body, close=close))
        if close:
            self.transport.close()


def _wants_close(head: bytes) -> bool:
    lower = head.lower()
    if b"connection: close" in lower:
        return True
    return lower.split(b"\r\n", 1)[0].endswith(b"http/1.0") and b"keep-alive" not in lower


def _response(status: int, body: str, *, close: bool) -> bytes:
    reason = {200: "OK", 400: "Bad Request"}[status]
    data = body.encode()
    connection = "close" if close else "keep-alive"
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(data)}\r\nConnection: {connection}\r\n\r\n"
    ).encode() + data


async def serve_backends(
    port: int,
    *,
    count: int = 4,
    delay: Delay = SEED_DELAY,
    host: str = "127.0.0.1",
    proxy_protocol: bool = False,
) -> list[asyncio.AbstractServer]:
    """Start `count` demo backends on ports port..port+count-1 (port 0: free ports)."""
    loop = asyncio.get_running_loop()
    servers: list[asyncio.AbstractServer] = []
    for i in range(count):
        named: dict[str, str] = {}
        server = await loop.create_server(
            lambda named=named: DemoBackend(named["name"], delay, proxy_protocol),  # type: ignore[misc]
            host,
            port + i if port else 0,
            backlog=4096,
        )
        # Set before any connection can be accepted: that happens in a later loop turn.
        named["name"] = f"backend {server.sockets[0].getsockname()[1]}\n"
        servers.append(server)
    return servers
