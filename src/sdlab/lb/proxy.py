"""The TCP proxy: each client connection is joined to a backend picked by the pool, and
bytes flow both ways until both sides are done.

    proxy = Proxy(pool, connect_timeout=3, idle_timeout=300, max_connections=10_000)
    await proxy.listen("127.0.0.1", 9090)
    ...
    await proxy.shutdown(timeout=30)      # stop accepting; open connections finish

A connection, in the order it meets the proxy:

1. Accepted (by the event loop, in C). Over `max_connections` open ones, it waits in a
   queue, unread, until one closes (HAProxy's `maxconn` queues the same way).
2. The pool's strategy picks a backend and the proxy connects to it, within
   `connect_timeout`. Bytes the client sends meanwhile are kept, not left unread: a
   pause and a resume would cost two system calls a connection.
3. A refused or timed-out connect marks that backend down (passive health) and the client
   is tried on another, until none is left; only then is the client closed unserved.
4. Connected: the PROXY protocol header first if asked (`send_proxy` 1 or 2), then the
   kept bytes, then both directions as they come. Flow control: when one side's send
   buffer passes its high-water mark, the other side is not read until it drains.
5. Half-close: an EOF from one side is passed on as an EOF (`shutdown(SHUT_WR)`) and the
   other direction keeps flowing; the connection ends when both sides have sent EOF,
   or either one closes or resets.
6. No byte either way for `idle_timeout` seconds: both sides are cut. The clock is
   coarse (a sweep every second or so) so that a byte costs one attribute store.

Hot paths are `data_received` on both sides: a write, two counters, one time stamp.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

from sdlab.lb import proxy_protocol
from sdlab.lb.backends import Backend, Pool

KEEP_BEFORE_PAUSE = 256 * 1024  # bytes kept while the backend connect is under way


class Stats:
    """The proxy's own counters (each backend has its own too)."""

    __slots__ = ("accepted", "idle_closed", "no_backend", "queued", "retries")

    def __init__(self) -> None:
        self.accepted = 0
        self.retries = 0
        """Connects to a backend that failed and were tried again elsewhere."""
        self.no_backend = 0
        """Clients closed unserved: no backend was up."""
        self.idle_closed = 0
        self.queued = 0
        """Clients that waited for a free slot under `max_connections`."""

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class Proxy:
    """Listens, and joins each client to a backend of `pool`."""

    def __init__(
        self,
        pool: Pool,
        *,
        connect_timeout: float = 3.0,
        idle_timeout: float = 300.0,
        max_connections: int = 10_000,
        send_proxy: int | None = None,
    ) -> None:
        if send_proxy not in (None, 1, 2):
            raise ValueError(f"send_proxy is 1, 2 or None, not {send_proxy!r}")
        self.pool = pool
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.send_proxy = send_proxy
        self.stats = Stats()
        self.connections: set[Session] = set()
        self.waiting: deque[Session] = deque()
        self.clock = 0.0
        """Seconds, coarse: advanced by the idle sweep, read on every byte."""
        self.closing = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self._finished = asyncio.Event()
        """Set when the last connection ends after `shutdown` began."""
        self._servers: list[asyncio.AbstractServer] = []
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def active(self) -> int:
        return len(self.connections)

    async def listen(
        self, host: str, port: int, *, reuse_port: bool = False, backlog: int = 4096
    ) -> int:
        """Start accepting on host:port (0: any free port); return the port."""
        loop = self.loop = asyncio.get_running_loop()
        server = await loop.create_server(
            self._session, host, port, backlog=backlog, reuse_port=reuse_port or None
        )
        self._servers.append(server)
        if self._sweeper is None:
            self.clock = loop.time()
            self._sweeper = asyncio.create_task(self._sweep())
        return int(server.sockets[0].getsockname()[1])

    def _session(self) -> Session:
        return Session(self)

    async def shutdown(self, timeout: float = 30.0) -> int:
        """Stop accepting, let open connections finish for up to `timeout` seconds, then
        cut the rest; return how many were cut."""
        self.closing = True
        for server in self._servers:
            server.close()
        while self.waiting:
            self.waiting.popleft().abort()
        if self.connections:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._finished.wait()
        cut = list(self.connections)
        for session in cut:
            session.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        return len(cut)

    def released(self, session: Session) -> None:
        """A connection ended: its slot goes to the first client waiting for one."""
        self.connections.discard(session)
        if self.closing:
            if not self.connections:
                self._finished.set()
            return
        while self.waiting and len(self.connections) < self.max_connections:
            waiting = self.waiting.popleft()
            if not waiting.client_gone:
                self.connections.add(waiting)
                waiting.client.resume_reading()
                waiting.connect()

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        # Timeouts to within a quarter of themselves (and a second): one sweep instead
        # of a timer per connection.
        every = max(0.05, min(1.0, self.idle_timeout / 4, self.connect_timeout / 4))
        while True:
            await asyncio.sleep(every)
            self.clock = loop.time()
            idle = self.clock - self.idle_timeout
            slow = self.clock - self.connect_timeout
            for session in list(self.connections):
                if session.connecting is not None:
                    if session.seen < slow:
                        session.connect_timed_out()
                elif session.seen < idle:
                    self.stats.idle_closed += 1
                    session.abort()


class Session(asyncio.Protocol):
    """One client connection, and the backend connection it is joined to."""

    __slots__ = (
        "avoid",
        "backend",
        "client",
        "client_eof",
        "client_gone",
        "connecting",
        "kept",
        "kept_bytes",
        "proxy",
        "seen",
        "timed_out",
        "upstream",
        "upstream_eof",
        "upstream_gone",
    )

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.client: Any = None
        self.upstream: Any = None
        self.backend: Backend | None = None
        self.avoid: frozenset[str] = frozenset()
        self.kept: list[bytes] = []
        self.kept_bytes = 0
        self.seen = proxy.clock
        self.client_eof = self.upstream_eof = False
        self.client_gone = self.upstream_gone = False
        self.connecting: asyncio.Task[Any] | None = None
        self.timed_out = False

    # -- the client side --------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.client = transport
        proxy = self.proxy
        proxy.stats.accepted += 1
        if len(proxy.connections) >= proxy.max_connections:
            proxy.stats.queued += 1
            transport.pause_reading()
            proxy.waiting.append(self)
            return
        proxy.connections.add(self)
        self.connect()

    def connect(self) -> None:
        """Pick a backend (not one that failed this client already) and connect to it."""
        proxy = self.proxy
        pool = proxy.pool
        client = ""
        if pool.strategy.uses_client:
            client = self.client.get_extra_info("peername")[0]
        backend = pool.pick(client, self.avoid)
        if backend is None:
            proxy.stats.no_backend += 1
            self.client.close()
            return
        self.backend = backend
        backend.active += 1
        backend.connections += 1
        loop = proxy.loop
        assert loop is not None
        address = backend.address
        self.seen = proxy.clock  # the sweep times the connect out from here
        self.connecting = task = loop.create_task(
            loop.create_connection(self._upstream, address.host, address.port)
        )
        task.add_done_callback(self._connected)

    def _upstream(self) -> Upstream:
        return Upstream(self)

    def connect_timed_out(self) -> None:
        if self.connecting is not None:
            self.timed_out = True
            self.connecting.cancel()

    def _connected(self, task: asyncio.Task[Any]) -> None:
        self.connecting = None
        if task.cancelled() and not self.timed_out:
            self._upstream_lost()  # cancelled because the client left
            return
        error = None if task.cancelled() else task.exception()
        if error is None and not self.timed_out:
            return  # Upstream.connection_made did the rest
        backend = self.backend
        assert backend is not None
        reason = (
            f"connect timed out after {self.proxy.connect_timeout:g} s"
            if self.timed_out
            else f"connect failed: {error}"
        )
        self.timed_out = False
        backend.active -= 1
        backend.failed_connects += 1
        backend.streak = min(backend.streak, 0) - 1
        self.proxy.pool.mark_down(backend, reason)
        if self.client_gone:
            self.proxy.released(self)
            return
        self.proxy.stats.retries += 1
        self.avoid = self.avoid | {backend.name}
        self.backend = None
        self.upstream_gone = False
        self.connect()

    def data_received(self, data: bytes) -> None:
        self.seen = self.proxy.clock
        upstream = self.upstream
        if upstream is not None:
            upstream.write(data)
            self.backend.bytes_in += len(data)  # type: ignore[union-attr]
            return
        self.kept.append(data)
        self.kept_bytes += len(data)
        if self.kept_bytes > KEEP_BEFORE_PAUSE:
            self.client.pause_reading()

    def eof_received(self) -> bool:
        self.client_eof = True
        upstream = self.upstream
        if upstream is not None:
            if self.upstream_eof:
                upstream.close()
                self.client.close()
                return True
            upstream.write_eof()
        return True  # keep our sending side open: the half-close

    def connection_lost(self, exc: Exception | None) -> None:
        self.client_gone = True
        if self.connecting is not None:
            self.connecting.cancel()  # its callback releases the slot
        elif self.upstream is not None and not self.upstream_gone:
            if exc is None:
                self.upstream.close()  # its connection_lost releases the slot
            else:
                self.upstream.abort()
        else:
            self.proxy.released(self)

    def pause_writing(self) -> None:  # the client's send buffer is full
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.resume_reading()

    def abort(self) -> None:
        """Cut both sides now."""
        if self.upstream is not None:
            self.upstream.abort()
        if self.client is not None:
            self.client.abort()

    # -- the backend side, called by Upstream -----------------------------------------

    def upstream_made(self, transport: Any) -> None:
        if self.client_gone:
            transport.abort()
            return
        self.upstream = transport
        version = self.proxy.send_proxy
        if version is not None:
            client = self.client.get_extra_info("peername")
            arrived = self.client.get_extra_info("sockname")
            transport.write(proxy_protocol.header(version, client[:2], arrived[:2]))
        if self.kept:
            transport.writelines(self.kept)
            self.backend.bytes_in += self.kept_bytes  # type: ignore[union-attr]
            if self.kept_bytes > KEEP_BEFORE_PAUSE:
                self.client.resume_reading()
            self.kept, self.kept_bytes = [], 0
        if self.client_eof:
            transport.write_eof()

    def upstream_eof_received(self) -> None:
        self.upstream_eof = True
        if self.client_eof:
            self.upstream.close()
            self.client.close()
        elif not self.client_gone:
            self.client.write_eof()

    def _upstream_lost(self) -> None:
        # Once only: a connect cancelled just as it succeeded ends here twice.
        if self.upstream_gone:
            return
        self.upstream_gone = True
        backend = self.backend
        if backend is not None:
            backend.active -= 1
        if self.client_gone:
            self.proxy.released(self)
        else:
            self.client.close()


class Upstream(asyncio.Protocol):
    """The backend connection of a session: passes every event to it, but forwards
    bytes itself (one Python call a read, not two)."""

    __slots__ = ("backend", "client", "proxy", "session")

    def __init__(self, session: Session) -> None:
        self.session = session
        self.proxy = session.proxy
        self.client = session.client
        assert session.backend is not None  # made only once a backend is picked
        self.backend: Backend = session.backend

    def connection_made(self, transport: Any) -> None:
        self.session.upstream_made(transport)

    def data_received(self, data: bytes) -> None:
        self.session.seen = self.proxy.clock
        self.client.write(data)
        self.backend.bytes_out += len(data)

    def eof_received(self) -> bool:
        self.session.upstream_eof_received()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.session._upstream_lost()

    def pause_writing(self) -> None:  # the backend's send buffer is full
        self.session.client.pause_reading()

    def resume_writing(self) -> None:
        self.session.client.resume_reading()
