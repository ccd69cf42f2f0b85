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
import random
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any

from sdlab.kv.commands import (
    COMMANDS,
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

MAX_PENDING = 1024  # replies owed on one connection before it stops reading
MAX_CURSORS = 10_000  # SCAN cursors remembered (oldest forgotten first)
# Run at once even between MULTI and EXEC (all others are queued there), as in Redis.
NOT_QUEUED = frozenset({"multi", "exec", "discard", "watch", "quit"})


class RespServer:
    """Serves a Store over RESP2 on a TCP port (0: any free port; see `port`)."""

    def __init__(self, store: Store, *, host: str = "127.0.0.1", port: int = 6380) -> None:
        self.store = store
        self.host = host
        self.port = port
        self.started = time.time()
        self.connections: set[Connection] = set()
        self.commands_served = 0
        self._server: asyncio.Server | None = None
        self._cursors: OrderedDict[int, bytes] = OrderedDict()  # cursor -> the last key
        self._next_cursor = itertools.count(random.randrange(1, 1 << 30))
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

    def remember_cursor(self, after: bytes) -> int:
        cursor = next(self._next_cursor)
        self._cursors[cursor] = after
        while len(self._cursors) > MAX_CURSORS:
            self._cursors.popitem(last=False)
        return cursor

    def recall_cursor(self, cursor: int) -> bytes:
        try:
            return self._cursors[cursor]
        except KeyError:
            raise CommandError("ERR invalid cursor") from None


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
        self.session = Session(server, number)
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
        found = lookup(args)
        refusal = unknown(args) if found is None else found.refusal(args)
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
        if kind == "write" and prepare is not None and not naive and gate is None:
            reply = self._queue_write(found.name, prepare, args)  # in the batcher now
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
            committed = self.server.store.submit(write)
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
        try:
            while True:
                while not self.replies:
                    if self.closing:
                        return
                    self._more.clear()
                    await self._more.wait()
                out = [await self.replies.popleft()]
                while self.replies and self.replies[0].done() and len(out) < 512:
                    out.append(self.replies.popleft().result())
                self.writer.write(b"".join(out))
                if self.writer.transport.is_closing():  # the client left (or was reset)
                    raise ConnectionResetError("the connection is closed")
                if self.writer.transport.get_write_buffer_size():
                    # The socket did not take it all: wait if that is above the limit.
                    # (Skipped otherwise, as it is nearly always: drain() is a coroutine,
                    # so a lost connection is noticed by the check above instead.)
                    await self.writer.drain()
                if len(self.replies) <= MAX_PENDING // 2:
                    self._room.set()
        except (ConnectionError, OSError):
            self.closing = True
            self._room.set()


async def _abort(session: Session, why: str) -> Reply:
    session.unwatch()
    raise CommandError(f"EXECABORT Transaction discarded because of: {why}")
