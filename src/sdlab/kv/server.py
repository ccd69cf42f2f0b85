"""The Redis-protocol server: redis-cli, redis-py and redis-benchmark talk to a `Store`.

    server = RespServer(store, port=6380)
    await server.start()

This module is the transport: connections, RESP framing, the replies going back in
order. What each command does is in `commands.py`, the order a connection's commands
run in `ordering.py`, MULTI and WATCH's state in `transaction.py`.

Each connection reads whatever arrives, parses every complete command, and starts each
one at once, so a pipelining client (`redis-benchmark -P 16`) gets all its writes into
one group commit. Replies still go back in the order of the requests, and a command sees
the effect of the ones before it on its connection: reads wait for the connection's
earlier writes to commit, writes for its earlier reads. Writes that follow each other go
straight into the batcher, which keeps their order (without group commit each write
waits for the one before). Between MULTI and EXEC commands are queued (`+QUEUED`), and
EXEC runs them as one write. A malformed request is answered with an error and then the
connection is closed, as Redis does; an unknown command is answered with an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from sdlab.kv import ops
from sdlab.kv.commands import (
    COMMANDS,
    NO_AUTH,
    NOAUTH,
    Command,
    CommandError,
    Prepare,
    Session,
    error_reply,
    execute,
    lookup,
    unknown,
)
from sdlab.kv.ordering import Ordering
from sdlab.kv.resp import OK, QUEUED, Error, Parser, ProtocolError, Reply, encode
from sdlab.kv.store import Store
from sdlab.kv.transaction import Multi, Watches

__all__ = ["COMMANDS", "RespServer"]

logger = logging.getLogger("sdlab.kv")

MAX_PENDING = 1024  # replies owed on one connection before it stops reading
# The most reply bytes a connection may hold for a client that does not read them, as
# Redis's `client-output-buffer-limit` hard limit (Redis has none for normal clients;
# then one client that stops reading can take all the memory).
OUTPUT_LIMIT = 64 * 1024 * 1024
SEND_CHUNK = 1024 * 1024  # replies joined into one write, at most (about)
# Run at once even between MULTI and EXEC (all others are queued there), as in Redis.
NOT_QUEUED = frozenset({"multi", "exec", "discard", "watch", "quit"})


class RespServer:
    """Serves a Store over RESP2 on a TCP port (0: any free port; see `port`)."""

    def __init__(
        self,
        store: Store,
        *,
        host: str = "127.0.0.1",
        port: int = 6380,
        password: str | bytes | None = None,
        output_limit: int = OUTPUT_LIMIT,
    ) -> None:
        """password: what AUTH (or HELLO ... AUTH) must give before any other command
        (None: no AUTH needed). output_limit: the most unsent reply bytes a connection
        may hold; a client past it is disconnected."""
        self.store = store
        self.host = host
        self.port = port
        self.password = password.encode() if isinstance(password, str) else password
        self.output_limit = output_limit
        self.started = time.time()
        self.connections: set[Connection] = set()
        self.commands_served = 0
        self.output_disconnections = 0  # clients dropped past output_limit
        self._server: asyncio.Server | None = None
        self._ids = itertools.count(1)
        self.watches = Watches()
        store.listeners.append(self.watches.touch)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self, grace: float = 10.0) -> None:
        """Take no more connections, and no more commands; answer the commands already
        taken (for up to `grace` seconds), then close every connection. A client knows
        that what it was answered ran, and what it was not answered did not."""
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.finish()
        serving = [c.task for c in self.connections if c.task is not None]
        if serving:
            await asyncio.wait(serving, timeout=grace)
        for connection in list(self.connections):
            connection.abort()
        if self._server is not None:
            await self._server.wait_closed()
        with contextlib.suppress(ValueError):
            self.store.listeners.remove(self.watches.touch)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = Connection(self, reader, writer, next(self._ids))
        connection.task = asyncio.current_task()
        self.connections.add(connection)
        try:
            await connection.serve()
        finally:
            self.connections.discard(connection)


class Connection:
    """One client: reads requests, runs them, sends replies in order."""

    def __init__(
        self,
        server: RespServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        number: int,
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.session = Session(server, number, authenticated=server.password is None)
        self.created = self.active = time.monotonic()
        self.last_command = "NULL"
        self.parser = Parser(max_bulk=server.store.max_value + 64 * 1024)
        self.ordering = Ordering()
        self.replies: deque[asyncio.Future[bytes]] = deque()  # encoded, in request order
        self.closing = False
        self.finishing = False
        self.task: asyncio.Task[Any] | None = None  # the one running serve()
        self._more = asyncio.Event()
        self._room = asyncio.Event()

    def abort(self) -> None:
        self.closing = True
        self.writer.transport.abort()

    def finish(self) -> None:
        """Stop reading (the server is stopping): answer what was read, then close."""
        self.finishing = True
        if not self.closing and self.task is not None:
            self.task.cancel()  # out of its read (or its wait for room), into `finally`

    async def serve(self) -> None:
        sender = asyncio.get_running_loop().create_task(self._send())
        try:
            while not self.closing:
                data = await self.reader.read(65536)
                if not data:
                    break
                self.parser.feed(data)
                try:
                    for args in self.parser:
                        self._dispatch(args)
                        if self.closing:
                            break
                except ProtocolError as exc:
                    self._reply_now(Error(f"ERR Protocol error: {exc}"))
                    self.closing = True
                while len(self.replies) > MAX_PENDING and not sender.done():
                    self._room.clear()
                    await self._room.wait()
        except asyncio.CancelledError:
            if not self.finishing:
                raise
        except (ConnectionError, OSError):
            pass
        finally:
            self.closing = True
            self._more.set()
            with contextlib.suppress(Exception):
                await sender
            self.session.unwatch()  # after every reply: a WATCH may have been running
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()

    def _reply_now(self, reply: Reply) -> None:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        future.set_result(encode(reply, self.session.resp3))
        self.replies.append(future)
        self._more.set()

    def _dispatch(self, args: list[bytes]) -> None:
        self.server.commands_served += 1
        self.active = time.monotonic()
        found = lookup(args)
        refusal = unknown(args) if found is None else found.refusal(args)
        if refusal is None and found is not None and not self.session.authenticated:
            # After unknown and arity, as Redis checks.
            refusal = None if found.name in NO_AUTH else Error(NOAUTH)
        if found is not None:  # for CLIENT LIST's cmd=, as Redis names it (client|list)
            container = found.name in ("client", "config", "command", "object")
            sub = args[1].decode(errors="replace").lower() if container and args[1:] else ""
            self.last_command = f"{found.name}|{sub}" if sub else found.name
        multi = self.session.multi
        if multi is not None and (found is None or found.name not in NOT_QUEUED):
            if refusal is not None:
                multi.refused = True
            else:
                multi.queued.append(args)
            self._reply_now(refusal or QUEUED)
            return
        if refusal is not None:
            if multi is not None and found is not None and found.name == "exec":
                # EXEC x: as Redis, the transaction is discarded, saying why.
                session, why = self.session, refusal.text.removeprefix("ERR ")
                session.multi = None
                self._start(found, "session", [], None, lambda: _abort(session, why))
                return
            if multi is not None:  # DISCARD x, say: as Redis, that spoils the transaction
                multi.refused = True
            self._reply_now(refusal)
            return
        assert found is not None  # (an unknown command has its refusal)
        if found.name in ("multi", "exec", "discard", "watch"):
            self._transaction(found, args, multi)
            return
        if found.name == "quit":  # nothing after it is read, let alone run
            self.closing = True
        self._start(found, found.kind, args[1:], found.prepare)

    def _transaction(self, found: Command, args: list[bytes], multi: Multi | None) -> None:
        """MULTI, EXEC, DISCARD and WATCH as they are read: MULTI opens the queue at once
        (the commands after it are queued as they are read); EXEC takes it and runs it
        in its turn, as a write."""
        name, session = found.name, self.session
        if name == "multi":
            if multi is not None:
                self._reply_now(Error("ERR MULTI calls can not be nested"))
            else:
                session.multi = Multi()
                self._reply_now(OK)
        elif name == "watch" and multi is not None:
            self._reply_now(Error("ERR WATCH inside MULTI is not allowed"))
        elif name in ("exec", "discard") and multi is None:
            self._reply_now(Error(f"ERR {name.upper()} without MULTI"))
        elif name == "exec":
            assert multi is not None
            session.multi = None
            self._start(found, "write", [], None, lambda: execute(session, multi))
        else:  # DISCARD, or WATCH outside MULTI: in their turn
            session.multi = None
            self._start(found, found.kind, args[1:], None)

    def _start(
        self,
        found: Command,
        kind: str,
        args: list[bytes],
        prepare: Prepare | None,
        call: Callable[[], Awaitable[Reply]] | None = None,
    ) -> None:
        """Start a command in its turn (see Ordering), its reply in the queue of replies.
        `call`: what to run instead of the command's handler (EXEC's queue)."""
        naive = kind == "write" and not self.server.store.group_commit
        gate = None
        if kind != "none":
            gate = self.ordering.admit(kind, serial=naive or kind == "session")
        started: asyncio.Future[None] | None = None
        fast = gate is None and found.name != "flushall"  # (FLUSHALL makes tables first)
        if kind == "write" and prepare is not None and not naive and fast:
            reply = self._queue_write(found.name, prepare, args)  # in the batcher now
        elif kind == "read" and found.lookup and gate is None:
            reply = self._queue_read(found.name, prepare, args)  # in this turn's SELECT
        else:
            started = asyncio.get_running_loop().create_future()
            run = call or (lambda: found.handler(self.session, args))
            reply = asyncio.get_running_loop().create_task(
                self._run(found.name, run, gate, started)
            )
        if kind != "none":
            self.ordering.track(reply, started)
        self.replies.append(reply)
        self._more.set()

    def _queue_write(self, name: str, prepare: Prepare, args: list[bytes]) -> asyncio.Future[bytes]:
        """The hot path, a write with group commit: into the batcher now, and its reply
        encoded when its batch commits, by a callback. A task per write (`_run`) would
        cost several times as much, for nothing to wait on but that commit."""
        reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        try:
            write, answer = prepare(self.session, args)
            committed = self.server.store.submit(self.session.wrap(write))
        except Exception as exc:  # refused before it was queued (a bad request, a closed store)
            reply.set_result(encode(error_reply(name, exc), self.session.resp3))
            return reply

        def committed_now(committed: asyncio.Future[Any]) -> None:
            result: Reply
            try:
                result = answer(committed.result())
            except Exception as exc:
                result = error_reply(name, self.server.store.failure(exc))
            try:
                reply.set_result(encode(result, self.session.resp3))
            except Exception as exc:  # a bug: an answer left unset would stall the replies
                reply.set_result(encode(error_reply(name, exc), self.session.resp3))

        committed.add_done_callback(committed_now)
        return reply

    def _queue_read(
        self, name: str, prepare: Prepare | None, args: list[bytes]
    ) -> asyncio.Future[bytes]:
        """The hot path of a lookup (GET and the like) with nothing to wait for: into
        this loop turn's shared SELECT now, its reply encoded by a callback."""
        reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        store = self.server.store
        try:
            assert prepare is not None
            step, answer = prepare(self.session, args)
            assert isinstance(step, ops.Lookup)
            found = store.lookup(step.keys, self.session.db)
        except Exception as exc:
            reply.set_result(encode(error_reply(name, exc), self.session.resp3))
            return reply

        def read_now(found: asyncio.Future[tuple[ops.Found, int]]) -> None:
            result: Reply
            try:
                rows, now = found.result()
            except Exception as exc:  # the database's failure
                reply.set_result(encode(error_reply(name, store.failure(exc)), self.session.resp3))
                return
            try:
                result = answer(step.answer(rows, now))
            except Exception as exc:  # the command's own (OBJECT FREQ, say)
                result = error_reply(name, exc)
            try:
                reply.set_result(encode(result, self.session.resp3))
            except Exception as exc:  # a bug: an answer left unset would stall the replies
                reply.set_result(encode(error_reply(name, exc), self.session.resp3))

        found.add_done_callback(read_now)
        return reply

    async def _run(
        self,
        name: str,
        run: Callable[[], Awaitable[Reply]],
        gate: asyncio.Future[Any] | None,
        started: asyncio.Future[None],
    ) -> bytes:
        try:
            if gate is not None:
                await gate
        finally:  # (set even if cancelled: the commands after it must not wait forever)
            # The next command of the run may start once this step yields: by then this
            # one's write (if it is one) is in the batcher, as handlers queue it first.
            started.set_result(None)
        reply: Reply
        try:
            reply = await run()
        except Exception as exc:
            reply = error_reply(name, exc)
        return encode(reply, self.session.resp3)

    async def _send(self) -> None:
        """Write each reply once it and those before it are known. No waiting for the
        socket: a client that reads slowly has its replies buffered here, up to the
        server's output limit; past it the connection is dropped, and its buffer with
        it (a client that never reads would otherwise hold any amount of memory)."""
        transport = self.writer.transport
        try:
            while True:
                while not self.replies:
                    if self.closing:
                        return
                    self._more.clear()
                    await self._more.wait()
                out = [await self.replies.popleft()]
                size = len(out[0])
                while self.replies and self.replies[0].done() and size < SEND_CHUNK:
                    out.append(self.replies.popleft().result())
                    size += len(out[-1])
                self.writer.write(b"".join(out))
                if transport.is_closing():  # the client left (or was reset)
                    raise ConnectionResetError("the connection is closed")
                if transport.get_write_buffer_size() > self.server.output_limit:
                    self._over_limit()
                    return
                if len(self.replies) <= MAX_PENDING // 2:
                    self._room.set()
        except (ConnectionError, OSError):
            self.closing = True
            self._room.set()

    def _over_limit(self) -> None:
        self.server.output_disconnections += 1
        logger.warning(
            "client id=%d closed: over %d bytes of replies unread (output limit)",
            self.session.number,
            self.server.output_limit,
        )
        self.replies.clear()
        self._room.set()
        self.abort()  # drops the transport's buffer with it

    def describe(self) -> str:
        """This connection as a line of CLIENT LIST (Redis's fields; those with no
        meaning here are 0)."""
        info = self.writer.get_extra_info
        peer, local = info("peername") or ("?", 0), info("sockname") or ("?", 0)
        sock = info("socket")
        now = time.monotonic()
        session, multi = self.session, self.session.multi
        omem = self.writer.transport.get_write_buffer_size()
        fields = {
            "id": session.number,
            "addr": f"{peer[0]}:{peer[1]}",
            "laddr": f"{local[0]}:{local[1]}",
            "fd": sock.fileno() if sock is not None else -1,
            "name": (session.name or b"").decode(errors="replace"),
            "age": int(now - self.created),
            "idle": int(now - self.active),
            "flags": "x" if multi is not None else "N",
            "db": session.db,
            "sub": 0,
            "psub": 0,
            "ssub": 0,
            "multi": -1 if multi is None else len(multi.queued),
            "qbuf": self.parser.buffered,
            "qbuf-free": 0,
            "argv-mem": 0,
            "multi-mem": 0,
            "rbs": 0,
            "rbp": 0,
            "obl": 0,
            "oll": len(self.replies),
            "omem": omem,
            "tot-mem": omem,
            "events": "r",
            "cmd": self.last_command,
            "user": "default",
            "redir": -1,
            "resp": 3 if session.resp3 else 2,
        }
        return " ".join(f"{k}={v}" for k, v in fields.items())


async def _abort(session: Session, why: str) -> Reply:
    session.unwatch()
    raise CommandError(f"EXECABORT Transaction discarded because of: {why}")
