"""The Redis-protocol server: redis-cli, redis-py and redis-benchmark talk to a `Store`.

    server = RespServer(store, port=6380)
    await server.start()

Each connection reads whatever arrives, parses every complete command, and starts each
one at once, so a pipelining client (`redis-benchmark -P 16`) gets all its writes into
one group commit. Replies still go back in the order of the requests, and a command sees
the effect of the ones before it on its connection: reads wait for the connection's
earlier writes to commit, writes for its earlier reads. Writes that follow each other go
straight into the batcher, which keeps their order (without group commit each write
waits for the one before). A malformed request is answered with an error and then the
connection is closed, as Redis does; an unknown command is answered with an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fnmatch
import functools
import itertools
import logging
import os
import platform
import random
import re
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sdlab import __version__
from sdlab.kv import ops
from sdlab.kv.core import (
    InvalidKey,
    InvalidTTL,
    KVError,
    NotAnInteger,
    ValueTooLarge,
    as_key,
    as_value,
    expiry_after,
    now_ms,
    parse_int,
)
from sdlab.kv.match import compile_pattern, literal_prefix
from sdlab.kv.resp import OK, Error, Map, Parser, ProtocolError, Reply, Simple, encode
from sdlab.kv.store import Store

logger = logging.getLogger("sdlab.kv")

MAX_PENDING = 1024  # replies owed on one connection before it stops reading
MAX_CURSORS = 10_000  # SCAN cursors remembered (oldest forgotten first)
REDIS_VERSION = "7.0.0"  # what INFO and HELLO claim, for clients that check
CURSOR = re.compile(rb"[0-9]{1,20}")  # a SCAN cursor: digits only, 64 bits at most


class CommandError(Exception):
    """A request the store cannot take: its text is the error reply (`ERR ...`)."""


# A write command's request turned into its write and how to answer with the result,
# without awaiting anything (see Command.prepare).
Prepared = tuple[ops.Write, Callable[[Any], Reply]]


@dataclass(frozen=True)
class Command:
    name: str
    handler: Callable[[Session, list[bytes]], Awaitable[Reply]]
    arity: int  # Redis's convention: counts the name; negative means "at least"
    kind: str  # "read", "write", "none" (touches no data), "session" (see Ordering)
    flags: tuple[str, ...] = ()
    keys: tuple[int, int, int] = (0, 0, 0)  # first key, last key, step (COMMAND INFO)
    # For a write that is one ops.Write: the request as that write and its answer, so
    # that with group commit the connection queues it at once, with no task of its own.
    prepare: Callable[[Session, list[bytes]], Prepared] | None = None

    def info(self) -> list[Any]:
        """COMMAND INFO's ten fields, as Redis 7 gives them: name, arity, flags, first key,
        last key, step; then ACL categories, tips, key specs and subcommands, empty here
        (no ACLs, no subcommand table), but there: redis-py reads the seventh over RESP3."""
        first, last, step = self.keys
        flags = [f.encode() for f in self.flags]
        return [self.name.encode(), self.arity, flags, first, last, step, [], [], [], []]


COMMANDS: dict[str, Command] = {}


def command(
    arity: int, kind: str, *, flags: tuple[str, ...] = (), keys: tuple[int, int, int] = (1, 1, 1)
) -> Callable[[Callable[[Session, list[bytes]], Awaitable[Reply]]], Any]:
    def add(handler: Callable[[Session, list[bytes]], Awaitable[Reply]]) -> Any:
        name = handler.__name__.strip("_")
        if kind in ("none", "session"):
            flag_set, key_spec = flags or ("fast",), (0, 0, 0)
        else:
            flag_set = flags or (("write",) if kind == "write" else ("readonly", "fast"))
            key_spec = keys
        COMMANDS[name] = Command(name, handler, arity, kind, flag_set, key_spec)
        return handler

    return add


def write_command(
    arity: int, *, keys: tuple[int, int, int] = (1, 1, 1)
) -> Callable[[Callable[[Session, list[bytes]], Prepared]], Any]:
    """A write command given as its `prepare` function; its handler (for the store
    without group commit) applies the write and answers as `prepare` says."""

    def add(prepare: Callable[[Session, list[bytes]], Prepared]) -> Any:
        @functools.wraps(prepare)
        async def handler(session: Session, args: list[bytes]) -> Reply:
            write, answer = prepare(session, args)
            return answer(await session.store.apply(write))

        command(arity, "write", keys=keys)(handler)
        name = handler.__name__.strip("_")
        COMMANDS[name] = dataclasses.replace(COMMANDS[name], prepare=prepare)
        return prepare

    return add


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


class Ordering:
    """What a new command of a connection must wait for, so that it sees the effect of
    the commands sent before it: a read waits for earlier writes, a write for earlier
    reads; a run of the same kind goes without waiting for each other's results.
    `serial` commands wait for everything before them: writes without group commit, and
    "session" commands (HELLO), which change how the replies after them are encoded, and
    so wait for those before them to be encoded first.

    Within a run, commands also *start* in order: each waits for the one before it to
    have started (for a write: to be in the batcher), not only for the run's gate. Tasks
    waiting on one gate do not wake in the order they were made (a task whose first
    step comes after the gate is done does not wait at all), so a gate alone let a
    pipeline's `SET k 39` reach the batcher before its `SET k 4`."""

    def __init__(self) -> None:
        self.kind: str | None = None
        self.running: list[asyncio.Future[Any]] = []  # this run's replies not yet known
        self.gate: asyncio.Future[Any] | None = None  # the earlier run's end
        self.last: asyncio.Future[None] | None = None  # the run's last command has started

    def admit(self, kind: str, serial: bool) -> asyncio.Future[Any] | None:
        """A new command of `kind`: what it must wait for before it starts (None: no
        wait). Call `started()` or `track()` for it next."""
        if kind != self.kind or serial:
            earlier = [task for task in self.running if not task.done()]
            self.gate = asyncio.gather(*earlier, return_exceptions=True) if earlier else None
            self.running = []
            self.last = None
            self.kind = kind
        waits = self.last if self.last is not None else self.gate
        return None if waits is None or waits.done() else waits

    def track(self, reply: asyncio.Future[Any], started: asyncio.Future[None] | None) -> None:
        """The admitted command's reply, and the future it sets once it has started
        (None: it started already, as a write put straight into the batcher does)."""
        if len(self.running) >= 64:  # a long run of one kind: forget what has finished
            self.running = [task for task in self.running if not task.done()]
        self.running.append(reply)
        self.last = started


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
        self.session = Session(server, self, number)
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
        name = args[0].decode("utf-8", "replace").lower()
        found = COMMANDS.get(name)
        if found is None:
            self._reply_now(_unknown(args))
            return
        if (found.arity > 0 and len(args) != found.arity) or len(args) < -found.arity:
            self._reply_now(Error(f"ERR wrong number of arguments for '{name}' command"))
            return
        if found.name == "quit":  # nothing after it is read, let alone run
            self.closing = True
        naive = found.kind == "write" and not self.server.store.group_commit
        gate = None
        if found.kind != "none":
            gate = self.ordering.admit(found.kind, serial=naive or found.kind == "session")
        started: asyncio.Future[None] | None = None
        if found.prepare is not None and not naive and gate is None:
            reply = self._queue_write(found, args[1:])  # in the batcher now: in its place
        else:
            started = asyncio.get_running_loop().create_future()
            reply = asyncio.get_running_loop().create_task(
                self._run(found, args[1:], gate, started)
            )
        if found.kind != "none":
            self.ordering.track(reply, started)
        self.replies.append(reply)
        self._more.set()

    def _queue_write(self, found: Command, args: list[bytes]) -> asyncio.Future[bytes]:
        """The hot path, a write with group commit: into the batcher now, and its reply
        encoded when its batch commits, by a callback. A task per write (`_run`) would
        cost several times as much, for nothing to wait on but that commit."""
        reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        assert found.prepare is not None
        try:
            write, answer = found.prepare(self.session, args)
            committed = self.server.store.submit(write)
        except Exception as exc:  # refused before it was queued (a bad request, a closed store)
            reply.set_result(encode(_error(found.name, exc), self.session.resp3))
            return reply

        def committed_now(committed: asyncio.Future[Any]) -> None:
            result: Reply
            try:
                result = answer(committed.result())
            except Exception as exc:
                result = _error(found.name, self.server.store.failure(exc))
            try:
                reply.set_result(encode(result, self.session.resp3))
            except Exception as exc:  # a bug: an answer left unset would stall the replies
                reply.set_result(encode(_error(found.name, exc), self.session.resp3))

        committed.add_done_callback(committed_now)
        return reply

    async def _run(
        self,
        found: Command,
        args: list[bytes],
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
            reply = await found.handler(self.session, args)
        except Exception as exc:
            reply = _error(found.name, exc)
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


@dataclass
class Session:
    """What a command handler may use: the server, its store, its connection."""

    server: RespServer
    connection: Connection
    number: int
    name: bytes | None = None
    resp3: bool = False

    @property
    def store(self) -> Store:
        return self.server.store


# Helpers for the handlers.


def _error(name: str, exc: Exception) -> Error:
    """The error reply for a command that raised `exc`."""
    if isinstance(exc, CommandError):
        return Error(str(exc))
    if isinstance(exc, KVError):  # the database failing is BackendUnavailable: keep going
        return Error(f"ERR {exc}")
    logger.error("%s failed", name, exc_info=exc)  # a bug: say so, keep the connection
    return Error(f"ERR internal error: {type(exc).__name__}: {exc}")


def _unknown(args: list[bytes]) -> Error:
    """Redis's words, which clients match on: the name as sent, then about 128
    characters of arguments, each quoted and followed by a space."""
    head = ""
    for arg in args[1:]:
        if len(head) >= 128:
            break
        head += f"'{arg.decode('utf-8', 'replace')[: 128 - len(head)]}' "
    name = args[0].decode("utf-8", "replace")[:128]
    return Error(f"ERR unknown command '{name}', with args beginning with: {head}")


def _int(raw: bytes) -> int:
    try:
        return parse_int(raw)
    except NotAnInteger:
        raise CommandError("ERR value is not an integer or out of range") from None


def _key(raw: bytes) -> bytes:
    try:
        return as_key(raw)
    except InvalidKey as exc:
        raise CommandError(f"ERR {exc}") from None


def _bool(value: Any) -> int:
    return 1 if value else 0


# Connection and server commands.


@command(-1, "none")
async def ping(session: Session, args: list[bytes]) -> Reply:
    if len(args) > 1:
        raise CommandError("ERR wrong number of arguments for 'ping' command")
    return args[0] if args else Simple("PONG")


@command(2, "none")
async def echo(session: Session, args: list[bytes]) -> Reply:
    return args[0]


@command(2, "none")
async def select(session: Session, args: list[bytes]) -> Reply:
    if _int(args[0]) != 0:
        raise CommandError("ERR DB index is out of range (this server has database 0 only)")
    return OK


@command(-1, "none")
async def quit_(session: Session, args: list[bytes]) -> Reply:
    return OK  # the connection stops reading when it sees QUIT, and closes once replied


@command(-1, "session")
async def hello(session: Session, args: list[bytes]) -> Reply:
    """HELLO [2|3]: redis-py 8 opens with HELLO 3. Either way the replies are the same
    but for the null and maps."""
    if args:
        if args[0] not in (b"2", b"3"):
            raise CommandError("NOPROTO unsupported protocol version")
        if len(args) > 1:
            raise CommandError("ERR this server has no AUTH or SETNAME in HELLO")
        session.resp3 = args[0] == b"3"
    return Map(
        [
            (b"server", b"sdlab-kv"),
            (b"version", REDIS_VERSION.encode()),
            (b"proto", 3 if session.resp3 else 2),
            (b"id", session.number),
            (b"mode", b"standalone"),
            (b"role", b"master"),
            (b"modules", []),
        ]
    )


@command(-2, "none")
async def client(session: Session, args: list[bytes]) -> Reply:
    sub = args[0].lower()
    if sub == b"setname" and len(args) == 2:
        session.name = args[1] or None
        return OK
    if sub == b"getname":
        return session.name
    if sub == b"id":
        return session.number
    if sub == b"setinfo":  # redis-py names itself on connect
        return OK
    raise CommandError(f"ERR unknown subcommand '{args[0].decode(errors='replace')}' for CLIENT")


@command(-2, "none")
async def config(session: Session, args: list[bytes]) -> Reply:
    """CONFIG GET, for tools that ask (redis-benchmark asks for save and appendonly)."""
    if args[0].lower() != b"get" or len(args) != 2:
        raise CommandError("ERR this server supports CONFIG GET only")
    known = {
        "save": "",
        "appendonly": "no",
        "databases": "1",
        "proto-max-bulk-len": str(session.store.max_value),
    }
    pattern = args[1].decode(errors="replace").lower()
    return Map(
        [(k.encode(), v.encode()) for k, v in known.items() if fnmatch.fnmatchcase(k, pattern)]
    )


@command(-1, "none")
async def command_(session: Session, args: list[bytes]) -> Reply:
    """COMMAND, COMMAND COUNT, COMMAND INFO [name ...], COMMAND LIST [FILTERBY MODULE m |
    ACLCAT c | PATTERN glob], COMMAND DOCS [name ...]: what clients ask a server about
    its commands, in Redis 7's shapes. There are no modules, ACL categories or help
    texts here, so filtering by the first two finds nothing, and DOCS is an empty map
    (redis-cli then uses the help it carries)."""
    if not args:
        return [c.info() for c in COMMANDS.values()]
    sub, rest = args[0].lower(), args[1:]
    if sub == b"count":
        if rest:
            raise CommandError("ERR wrong number of arguments for 'command|count' command")
        return len(COMMANDS)
    if sub == b"info":  # no names: every command (Redis 7)
        names = [a.decode(errors="replace").lower() for a in rest] or list(COMMANDS)
        return [COMMANDS[n].info() if n in COMMANDS else None for n in names]
    if sub == b"list":
        return [name.encode() for name in COMMANDS if _listed(name, rest)]
    if sub == b"docs":
        return Map([])
    raise CommandError(f"ERR unknown subcommand '{args[0].decode(errors='replace')}' for COMMAND")


def _listed(name: str, filter_by: list[bytes]) -> bool:
    """COMMAND LIST's filter: none, or FILTERBY MODULE/ACLCAT/PATTERN and one value."""
    if not filter_by:
        return True
    if len(filter_by) != 3 or filter_by[0].upper() != b"FILTERBY":
        raise CommandError("ERR syntax error")
    kind, value = filter_by[1].upper(), filter_by[2]
    if kind == b"PATTERN":
        return compile_pattern(value.lower()).fullmatch(name.encode()) is not None
    if kind in (b"MODULE", b"ACLCAT"):
        return False
    raise CommandError("ERR syntax error")


@command(-1, "read", flags=("loading", "stale"), keys=(0, 0, 0))
async def info(session: Session, args: list[bytes]) -> Reply:
    server, store = session.server, session.store
    stats = store.stats()
    sections = {
        "server": {
            "redis_version": REDIS_VERSION,
            "sdlab_version": __version__,
            "redis_mode": "standalone",
            "os": f"{platform.system()} {platform.release()}",
            "process_id": os.getpid(),
            "tcp_port": server.port,
            "uptime_in_seconds": int(time.time() - server.started),
        },
        "clients": {"connected_clients": len(server.connections)},
        "stats": {"total_commands_processed": server.commands_served},
        "kv": {
            "backend": stats["backend"],
            "group_commit": int(stats["group_commit"]),
            "writes": stats["writes"],
            "batches": stats["batches"],
            "largest_batch": stats.get("largest_batch", 1),
            "swept": stats["swept"],
        },
    }
    wanted = args[0].decode(errors="replace").lower() if args else "all"
    lines = []
    for title, fields in sections.items():
        if wanted in ("all", "default", "everything", title):
            lines.append(f"# {title.capitalize()}")
            lines += [f"{k}:{v}" for k, v in fields.items()]
            lines.append("")
    return "\r\n".join(lines).encode()


@command(1, "read", keys=(0, 0, 0))
async def dbsize(session: Session, args: list[bytes]) -> Reply:
    return await session.store.size()


# Keys and values.


@command(2, "read")
async def get(session: Session, args: list[bytes]) -> Reply:
    return await session.store.get(_key(args[0]))


@command(-2, "read", keys=(1, -1, 1))
async def mget(session: Session, args: list[bytes]) -> Reply:
    return await session.store.mget([_key(a) for a in args])


@command(-2, "read", keys=(1, -1, 1))
async def exists(session: Session, args: list[bytes]) -> Reply:
    return await session.store.exists(*(_key(a) for a in args))


@command(2, "read")
async def ttl(session: Session, args: list[bytes]) -> Reply:
    return await session.store.ttl(_key(args[0]))


@command(2, "read")
async def pttl(session: Session, args: list[bytes]) -> Reply:
    return await session.store.pttl(_key(args[0]))


@command(2, "read")
async def type_(session: Session, args: list[bytes]) -> Reply:
    found = await session.store.exists(_key(args[0]))
    return Simple("string" if found else "none")


@write_command(-3)
def set_(session: Session, args: list[bytes]) -> Prepared:
    """SET key value [NX|XX] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]"""
    key, value = _key(args[0]), _value(session, args[1])
    nx = xx = keep_ttl = False
    expires_at: int | None = None
    options = iter(args[2:])
    for raw in options:
        option = raw.upper()
        if option == b"NX" and not xx:
            nx = True
        elif option == b"XX" and not nx:
            xx = True
        elif option == b"KEEPTTL" and expires_at is None:
            keep_ttl = True
        elif option in (b"EX", b"PX", b"EXAT", b"PXAT") and expires_at is None and not keep_ttl:
            amount = next(options, None)
            if amount is None:
                raise CommandError("ERR syntax error")
            expires_at = _expiry(option, _int(amount), "set")
        else:
            raise CommandError("ERR syntax error")
    if nx or xx or keep_ttl:
        write: ops.Write = ops.SetIf(key, value, expires_at, nx=nx, xx=xx, keep_ttl=keep_ttl)
    else:
        write = ops.Put(((key, value, expires_at),))
    return write, _ok_if_stored


def _ok_if_stored(stored: bool) -> Reply:
    return OK if stored else None


@command(3, "write")
async def setnx(session: Session, args: list[bytes]) -> Reply:
    write = ops.SetIf(_key(args[0]), _value(session, args[1]), None, nx=True)
    return _bool(await session.store.apply(write))


@command(4, "write")
async def setex(session: Session, args: list[bytes]) -> Reply:
    expires_at = _expiry(b"EX", _int(args[1]), "setex")
    await session.store.apply(ops.Put(((_key(args[0]), _value(session, args[2]), expires_at),)))
    return OK


@command(4, "write")
async def psetex(session: Session, args: list[bytes]) -> Reply:
    expires_at = _expiry(b"PX", _int(args[1]), "psetex")
    await session.store.apply(ops.Put(((_key(args[0]), _value(session, args[2]), expires_at),)))
    return OK


@command(-3, "write", keys=(1, -1, 2))
async def mset(session: Session, args: list[bytes]) -> Reply:
    if len(args) % 2:
        raise CommandError("ERR wrong number of arguments for 'mset' command")
    rows = tuple(
        (_key(args[i]), _value(session, args[i + 1]), None) for i in range(0, len(args), 2)
    )
    await session.store.apply(ops.Put(rows))
    return OK


@command(-2, "write", keys=(1, -1, 1))
async def del_(session: Session, args: list[bytes]) -> Reply:
    return int(await session.store.apply(ops.Delete(tuple(_key(a) for a in args))))


COMMANDS["unlink"] = Command("unlink", del_, -2, "write", ("write",), (1, -1, 1))


@command(-3, "write")
async def expire(session: Session, args: list[bytes]) -> Reply:
    return await _expire(session, args, 1000, now_ms(), "expire")


@command(-3, "write")
async def pexpire(session: Session, args: list[bytes]) -> Reply:
    return await _expire(session, args, 1, now_ms(), "pexpire")


@command(-3, "write")
async def expireat(session: Session, args: list[bytes]) -> Reply:
    return await _expire(session, args, 1000, 0, "expireat")


@command(-3, "write")
async def pexpireat(session: Session, args: list[bytes]) -> Reply:
    return await _expire(session, args, 1, 0, "pexpireat")


async def _expire(session: Session, args: list[bytes], unit_ms: int, base: int, name: str) -> Reply:
    """key time [NX|XX|GT|LT]: the options (Redis 7) are refused by name, not run as a
    plain EXPIRE, which would set an expiry the client asked to keep."""
    for option in args[2:]:
        if option.upper() not in (b"NX", b"XX", b"GT", b"LT"):
            raise CommandError(f"ERR Unsupported option {option.decode(errors='replace')}")
    if args[2:]:
        raise CommandError(f"ERR {name.upper()} options NX/XX/GT/LT are not supported")
    when = _when(_int(args[1]), unit_ms, base, name)
    return _bool(await session.store.apply(ops.Expire(_key(args[0]), when)))


@command(2, "write")
async def persist(session: Session, args: list[bytes]) -> Reply:
    return _bool(await session.store.apply(ops.Persist(_key(args[0]))))


@command(2, "write")
async def incr(session: Session, args: list[bytes]) -> Reply:
    return int(await session.store.apply(ops.Incr(_key(args[0]), 1)))


@command(2, "write")
async def decr(session: Session, args: list[bytes]) -> Reply:
    return int(await session.store.apply(ops.Incr(_key(args[0]), -1)))


@command(3, "write")
async def incrby(session: Session, args: list[bytes]) -> Reply:
    return int(await session.store.apply(ops.Incr(_key(args[0]), _int(args[1]))))


@command(3, "write")
async def decrby(session: Session, args: list[bytes]) -> Reply:
    by = _int(args[1])
    if by == -(2**63):
        raise CommandError("ERR decrement would overflow")
    return int(await session.store.apply(ops.Incr(_key(args[0]), -by)))


@command(-2, "read", keys=(0, 0, 0))
async def scan(session: Session, args: list[bytes]) -> Reply:
    """SCAN cursor [MATCH pattern] [COUNT n] [TYPE string]: keys in byte order.

    A cursor is a number standing for the last key returned, remembered by this server
    (the library's scan takes the key itself); 0 starts and ends a scan. As in Redis,
    each call's MATCH filters that call's keys, whatever the calls before it asked: it
    narrows the range to the pattern's literal prefix, then filters with Redis's glob.
    Every key is a string, so a TYPE other than string ends the scan at once, once the
    cursor and every option are found sound."""
    if not CURSOR.fullmatch(args[0]):  # int() would take "1_0", " 5" and "+5"
        raise CommandError("ERR invalid cursor")
    cursor = int(args[0])
    pattern: bytes | None = None
    count = 10
    strings = True
    options = iter(args[1:])
    for raw in options:
        option, value = raw.upper(), next(options, None)
        if value is None:
            raise CommandError("ERR syntax error")
        if option == b"MATCH":
            pattern = value
        elif option == b"COUNT":
            count = _int(value)
            if count < 1:
                raise CommandError("ERR syntax error")
        elif option == b"TYPE":
            strings = value.lower() == b"string"
        else:
            raise CommandError("ERR syntax error")
    after = None if cursor == 0 else session.server.recall_cursor(cursor)
    if not strings:
        return [b"0", []]
    prefix = literal_prefix(pattern or b"")
    keys, last = await session.store.scan(prefix, after=after, count=count)
    if pattern is not None:
        matches = compile_pattern(pattern).fullmatch
        keys = [k for k in keys if matches(k)]
    following = 0 if last is None else session.server.remember_cursor(last)
    return [str(following).encode(), keys]


def _value(session: Session, raw: bytes) -> bytes:
    try:
        return as_value(raw, session.store.max_value)
    except ValueTooLarge as exc:
        raise CommandError(f"ERR {exc}") from None


def _expiry(option: bytes, amount: int, name: str) -> int:
    """An absolute expiry (ms since the epoch) from EX, PX, EXAT or PXAT."""
    if amount <= 0:
        raise CommandError(f"ERR invalid expire time in '{name}' command")
    unit = 1000 if option in (b"EX", b"EXAT") else 1
    return _when(amount, unit, now_ms() if option in (b"EX", b"PX") else 0, name)


def _when(amount: int, unit_ms: int, base: int, name: str) -> int:
    """`base` + `amount` units (ms since the epoch), refused as Redis refuses it when it
    does not fit in 64 bits."""
    try:
        return expiry_after(amount * unit_ms, base)
    except InvalidTTL:
        raise CommandError(f"ERR invalid expire time in '{name}' command") from None
