"""The command table: each Redis command's name, arity, flags and key positions (what
COMMAND INFO tells clients), and how it runs.

A command that reads or writes keys is *prepared*: its request becomes one `ops` step
(an `ops.Write`, or an `ops.Read`) and a function from the step's result to the reply,
with nothing awaited. So a write goes into the group commit as soon as it is read off
the socket, and inside MULTI ... EXEC every step runs in the one SQL transaction. The
others (PING, CONFIG, INFO ...) are plain async handlers that touch no key.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import hmac
import itertools
import logging
import os
import platform
import random
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

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
from sdlab.kv.resp import NULL_ARRAY, OK, Error, Map, Reply, Simple
from sdlab.kv.store import DATABASES, Store, seconds_left
from sdlab.kv.transaction import Multi, Watch

if TYPE_CHECKING:
    from sdlab.kv.server import RespServer

logger = logging.getLogger("sdlab.kv")

REDIS_VERSION = "7.0.0"  # what INFO and HELLO claim, for clients that check
CURSOR = re.compile(rb"[0-9]{1,20}")  # a SCAN cursor: digits only, 64 bits at most
EXECABORT = "EXECABORT Transaction discarded because of previous errors."


class CommandError(Exception):
    """A request the store cannot take: its text is the error reply (`ERR ...`)."""


class Cursors:
    """One connection's SCAN cursors: each a number standing for the last key returned
    (redis-cli needs a 64-bit cursor; a key would not fit). Per connection, so that one
    client's scans never push out another's; the latest `limit` are kept."""

    def __init__(self, limit: int = 1000) -> None:
        self.limit = limit
        self._after: OrderedDict[int, bytes] = OrderedDict()
        self._next = itertools.count(random.randrange(1, 1 << 30))

    def remember(self, after: bytes) -> int:
        cursor = next(self._next)
        self._after[cursor] = after
        while len(self._after) > self.limit:
            self._after.popitem(last=False)
        return cursor

    def recall(self, cursor: int) -> bytes:
        try:
            return self._after[cursor]
        except KeyError:
            raise CommandError("ERR invalid cursor") from None


# A data command's request as its one step and how to answer with the step's result,
# without awaiting anything.
Prepared = tuple[ops.Step, Callable[[Any], Reply]]
Handler = Callable[["Session", list[bytes]], Awaitable[Reply]]
Prepare = Callable[["Session", list[bytes]], Prepared]


@dataclass
class Session:
    """What a command may use: the server, its store, and this connection's state."""

    server: RespServer
    number: int
    name: bytes | None = None
    resp3: bool = False
    multi: Multi | None = None  # between MULTI and EXEC (or DISCARD)
    watch: Watch = field(default_factory=Watch)
    authenticated: bool = True  # False until AUTH, when the server has a password
    db: int = 0  # SELECT's
    cursors: Cursors = field(default_factory=lambda: Cursors())  # this connection's SCAN

    @property
    def store(self) -> Store:
        return self.server.store

    def unwatch(self) -> None:
        self.server.watches.remove(self.watch)
        self.watch = Watch()

    def wrap(self, step: Any, db: int | None = None) -> Any:
        """A step as it runs in this session's database (or `db`): as it is in 0, else
        on that database's table (`ops.In`)."""
        db = self.db if db is None else db
        return step if db == 0 else ops.In(self.store.dialect(db), db, step)


@dataclass(frozen=True)
class Command:
    name: str
    handler: Handler
    arity: int  # Redis's convention: counts the name; negative means "at least"
    kind: str  # "read", "write", "none" (touches no data), "session" (see Ordering)
    flags: tuple[str, ...] = ()
    keys: tuple[int, int, int] = (0, 0, 0)  # first key, last key, step (COMMAND INFO)
    prepare: Prepare | None = None  # for a command that reads or writes keys (see above)
    lookup: bool = False  # prepared as an ops.Lookup: its read shares the turn's SELECT

    def refusal(self, args: list[bytes]) -> Error | None:
        """The error for a request of the wrong length (checked before anything runs,
        and while MULTI queues)."""
        if (self.arity > 0 and len(args) != self.arity) or len(args) < -self.arity:
            return Error(f"ERR wrong number of arguments for '{self.name}' command")
        return None

    def info(self) -> list[Any]:
        """COMMAND INFO's ten fields, as Redis 7 gives them: name, arity, flags, first key,
        last key, step; then ACL categories, tips, key specs and subcommands, empty here
        (no ACLs, no subcommand table), but there: redis-py reads the seventh over RESP3."""
        first, last, step = self.keys
        flags = [f.encode() for f in self.flags]
        return [self.name.encode(), self.arity, flags, first, last, step, [], [], [], []]


COMMANDS: dict[str, Command] = {}


def command(
    arity: int,
    kind: str,
    *,
    flags: tuple[str, ...] = (),
    keys: tuple[int, int, int] | None = None,
    aliases: tuple[str, ...] = (),
    prepare: Prepare | None = None,
    lookup: bool = False,
) -> Callable[[Handler], Handler]:
    """Add a command (and its aliases, the same command under other names) to COMMANDS,
    named after its handler (`del_` is DEL)."""

    def add(handler: Handler) -> Handler:
        if kind in ("none", "session"):
            flag_set, key_spec = flags or ("fast",), keys or (0, 0, 0)
        else:
            flag_set = flags or (("write",) if kind == "write" else ("readonly", "fast"))
            key_spec = keys or (1, 1, 1)
        for name in (handler.__name__.strip("_"), *aliases):
            COMMANDS[name] = Command(
                name, handler, arity, kind, flag_set, key_spec, prepare, lookup
            )
        return handler

    return add


def prepared(kind: str, arity: int, **options: Any) -> Callable[[Prepare], Prepare]:
    """A command given as its `prepare` function; its handler (for a read, for a write
    without group commit, and where it must wait its turn) runs the step and answers."""

    def add(prepare: Prepare) -> Prepare:
        @functools.wraps(prepare)
        async def handler(session: Session, args: list[bytes]) -> Reply:
            step, answer = prepare(session, args)
            store, db = session.store, session.db
            if isinstance(step, ops.Lookup):
                return answer(await store.find(step, db))
            if isinstance(step, ops.Read):
                return answer(await store.read(step.script(store.dialect(db), now_ms())))
            if isinstance(step, ops.FlushAll):  # every database's table: made first
                await store.databases()
                step = ops.FlushAll(tuple(store.dialects()))
            return answer(await store.apply(session.wrap(step)))

        command(arity, kind, prepare=prepare, **options)(handler)
        return prepare

    return add


def read_command(arity: int, **options: Any) -> Callable[[Prepare], Prepare]:
    return prepared("read", arity, **options)


def lookup_command(arity: int, **options: Any) -> Callable[[Prepare], Prepare]:
    """A read whose step is always an `ops.Lookup`."""
    return prepared("read", arity, lookup=True, **options)


def write_command(arity: int, **options: Any) -> Callable[[Prepare], Prepare]:
    return prepared("write", arity, **options)


def error_reply(name: str, exc: Exception) -> Error:
    """The error reply for a command that raised `exc`."""
    if isinstance(exc, CommandError):
        return Error(str(exc))
    if isinstance(exc, KVError):  # the database failing is BackendUnavailable: keep going
        return Error(f"ERR {exc}")
    logger.error("%s failed", name, exc_info=exc)  # a bug: say so, keep the connection
    return Error(f"ERR internal error: {type(exc).__name__}: {exc}")


def unknown(args: list[bytes]) -> Error:
    """Redis's words, which clients match on: the name as sent, then about 128
    characters of arguments, each quoted and followed by a space."""
    head = ""
    for arg in args[1:]:
        if len(head) >= 128:
            break
        head += f"'{arg.decode('utf-8', 'replace')[: 128 - len(head)]}' "
    name = args[0].decode("utf-8", "replace")[:128]
    return Error(f"ERR unknown command '{name}', with args beginning with: {head}")


def lookup(args: list[bytes]) -> Command | None:
    return COMMANDS.get(args[0].decode("utf-8", "replace").lower())


# Connection and server commands.


@command(-1, "none")
async def ping(session: Session, args: list[bytes]) -> Reply:
    if len(args) > 1:
        raise CommandError("ERR wrong number of arguments for 'ping' command")
    return args[0] if args else Simple("PONG")


@command(2, "none")
async def echo(session: Session, args: list[bytes]) -> Reply:
    return args[0]


@command(2, "session")
async def select(session: Session, args: list[bytes]) -> Reply:
    """SELECT 0 to 15. The commands after it wait for it (it is a session command), so
    that they run in the database it chose; 1 to 15's tables are made the first time."""
    db = _database(args[0])
    if db:
        await session.store.databases()
    session.db = db
    return OK


def _database(raw: bytes) -> int:
    db = _int(raw)
    if not 0 <= db < DATABASES:
        raise CommandError("ERR DB index is out of range")
    return db


@command(-1, "none")
async def quit_(session: Session, args: list[bytes]) -> Reply:
    return OK  # the connection stops reading when it sees QUIT, and closes once replied


# The commands a connection may send before it has authenticated (as in Redis).
NO_AUTH = frozenset({"auth", "hello", "quit"})
NOAUTH = "NOAUTH Authentication required."
NOAUTH_HELLO = (
    "NOAUTH HELLO must be called with the client already authenticated, otherwise the "
    "HELLO AUTH <user> <pass> option can be used to authenticate the client and select "
    "the RESP protocol version at the same time"
)
WRONGPASS = "WRONGPASS invalid username-password pair or user is disabled."


def authenticate(session: Session, user: bytes, password: bytes) -> None:
    """AUTH's check: the one user is `default`, and without a server password any
    password will do (as Redis's default user with `nopass`). Compared in constant time;
    the password is never logged or echoed."""
    expected = session.server.password
    right = expected is None or hmac.compare_digest(password, expected)
    if user != b"default" or not right:
        raise CommandError(WRONGPASS)
    session.authenticated = True


@command(-2, "none", flags=("noscript", "loading", "stale", "fast", "no_auth"))
async def auth(session: Session, args: list[bytes]) -> Reply:
    """AUTH [username] password."""
    if len(args) > 2:
        raise CommandError("ERR syntax error")
    if len(args) == 1 and session.server.password is None:
        raise CommandError(
            "ERR AUTH <password> called without any password configured for the default "
            "user. Are you sure your configuration is correct?"
        )
    user, password = (b"default", args[0]) if len(args) == 1 else (args[0], args[1])
    authenticate(session, user, password)
    return OK


@command(-1, "session", flags=("noscript", "loading", "stale", "fast", "no_auth"))
async def hello(session: Session, args: list[bytes]) -> Reply:
    """HELLO [2|3 [AUTH user password] [SETNAME name]]: redis-py 8 opens with HELLO 3
    (with AUTH when it has a password). Either way the replies are the same but for the
    null and maps. The options are read first, then the credentials checked, then the
    protocol changed: a refused HELLO changes nothing (as in Redis)."""
    resp3 = session.resp3
    credentials: tuple[bytes, bytes] | None = None
    name: bytes | None = None
    if args:
        if args[0] not in (b"2", b"3"):
            try:
                parse_int(args[0])
            except NotAnInteger:
                raise CommandError(
                    "ERR Protocol version is not an integer or out of range"
                ) from None
            raise CommandError("NOPROTO unsupported protocol version")
        resp3 = args[0] == b"3"
        options = iter(args[1:])
        for raw in options:
            option = raw.upper()
            if option == b"AUTH":
                user, password = next(options, None), next(options, None)
                if user is None or password is None:
                    raise CommandError(f"ERR Syntax error in HELLO option '{raw.decode()}'")
                credentials = (user, password)
            elif option == b"SETNAME":
                name = next(options, None)
                if name is None:
                    raise CommandError(f"ERR Syntax error in HELLO option '{raw.decode()}'")
            else:
                raise CommandError(
                    f"ERR Syntax error in HELLO option '{raw.decode(errors='replace')}'"
                )
    if credentials is not None:
        authenticate(session, *credentials)
    if not session.authenticated:
        raise CommandError(NOAUTH_HELLO)
    session.resp3 = resp3
    if name is not None:
        session.name = name or None
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
    """CLIENT SETNAME/GETNAME/ID/SETINFO/INFO, and LIST [TYPE normal|...] [ID id ...]."""
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
    if sub == b"info" and len(args) == 1:
        return _client_lines(session, {session.number})
    if sub == b"list":
        return _client_lines(session, _client_filter(args[1:]))
    raise CommandError(f"ERR unknown subcommand '{args[0].decode(errors='replace')}' for CLIENT")


def _client_filter(options: list[bytes]) -> set[int] | None:
    """CLIENT LIST's options: the ids asked for (None: all). Every client here is a
    normal one: TYPE master, replica or pubsub lists none."""
    if not options:
        return None
    kind = options[0].upper()
    if kind == b"TYPE" and len(options) == 2:
        if options[1].lower() not in (b"normal", b"master", b"replica", b"slave", b"pubsub"):
            raise CommandError(f"ERR Unknown client type '{options[1].decode(errors='replace')}'")
        return None if options[1].lower() == b"normal" else set()
    if kind == b"ID" and len(options) > 1:
        try:
            return {parse_int(raw) for raw in options[1:]}
        except NotAnInteger:
            raise CommandError("ERR Invalid client ID") from None
    raise CommandError("ERR syntax error")


def _client_lines(session: Session, ids: set[int] | None) -> bytes:
    connections = sorted(session.server.connections, key=lambda c: c.session.number)
    lines = [c.describe() for c in connections if ids is None or c.session.number in ids]
    return "".join(line + "\n" for line in lines).encode()


@command(-2, "none")
async def config(session: Session, args: list[bytes]) -> Reply:
    """CONFIG GET, for tools that ask (redis-benchmark asks for save and appendonly)."""
    if args[0].lower() != b"get" or len(args) != 2:
        raise CommandError("ERR this server supports CONFIG GET only")
    known = {
        "save": "",
        "appendonly": "no",
        "databases": str(DATABASES),
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
    sections: dict[str, dict[str, Any]] = {
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
        "stats": {
            "total_commands_processed": server.commands_served,
            "client_output_buffer_limit_disconnections": server.output_disconnections,
        },
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


@read_command(1, keys=(0, 0, 0))
def dbsize(session: Session, args: list[bytes]) -> Prepared:
    return ops.Read(ops.count), _same


# Keys and values.


# GET, MGET, EXISTS, TTL and the others that read keys by name are lookups: those of one
# loop turn share one SELECT (batching.GroupRead).


def _lookup(key: bytes) -> ops.Lookup:
    return ops.Lookup((key,), ops.value_of(key))


@lookup_command(2)
def get(session: Session, args: list[bytes]) -> Prepared:
    return _lookup(_key(args[0])), _same


@lookup_command(-2, keys=(1, -1, 1))
def mget(session: Session, args: list[bytes]) -> Prepared:
    keys = tuple(_key(a) for a in args)
    return ops.Lookup(keys, ops.values_of(keys)), _same


@lookup_command(-2, keys=(1, -1, 1))
def exists(session: Session, args: list[bytes]) -> Prepared:
    keys = tuple(_key(a) for a in args)
    return ops.Lookup(keys, ops.count_of(keys)), _same


@lookup_command(2)
def ttl(session: Session, args: list[bytes]) -> Prepared:
    key = _key(args[0])
    return ops.Lookup((key,), ops.pttl_of(key)), seconds_left


@lookup_command(2)
def pttl(session: Session, args: list[bytes]) -> Prepared:
    key = _key(args[0])
    return ops.Lookup((key,), ops.pttl_of(key)), _same


@lookup_command(2)
def type_(session: Session, args: list[bytes]) -> Prepared:
    key = _key(args[0])
    return ops.Lookup((key,), ops.count_of((key,))), _type_name


def _type_name(found: int) -> Reply:
    return Simple("string" if found else "none")


@write_command(-3)
def set_(session: Session, args: list[bytes]) -> Prepared:
    """SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]"""
    key, value = _key(args[0]), _value(session, args[1])
    nx = xx = keep_ttl = get = False
    expires_at: int | None = None
    options = iter(args[2:])
    for raw in options:
        option = raw.upper()
        if option == b"NX" and not xx:
            nx = True
        elif option == b"XX" and not nx:
            xx = True
        elif option == b"GET":
            get = True
        elif option == b"KEEPTTL" and expires_at is None:
            keep_ttl = True
        elif option in (b"EX", b"PX", b"EXAT", b"PXAT") and expires_at is None and not keep_ttl:
            amount = next(options, None)
            if amount is None:
                raise CommandError("ERR syntax error")
            expires_at = _expiry(option, _int(amount), "set")
        else:
            raise CommandError("ERR syntax error")
    if get:  # the old value, stored or not
        return ops.SetIf(key, value, expires_at, nx=nx, xx=xx, keep_ttl=keep_ttl, get=True), _same
    if nx or xx or keep_ttl:
        write: ops.Write = ops.SetIf(key, value, expires_at, nx=nx, xx=xx, keep_ttl=keep_ttl)
    else:
        write = ops.Put(((key, value, expires_at),))
    return write, _ok_if_stored


def _ok_if_stored(stored: bool) -> Reply:
    return OK if stored else None


@write_command(3)
def setnx(session: Session, args: list[bytes]) -> Prepared:
    return ops.SetIf(_key(args[0]), _value(session, args[1]), None, nx=True), _bool


@write_command(4)
def setex(session: Session, args: list[bytes]) -> Prepared:
    expires_at = _expiry(b"EX", _int(args[1]), "setex")
    return ops.Put(((_key(args[0]), _value(session, args[2]), expires_at),)), _ok


@write_command(4)
def psetex(session: Session, args: list[bytes]) -> Prepared:
    expires_at = _expiry(b"PX", _int(args[1]), "psetex")
    return ops.Put(((_key(args[0]), _value(session, args[2]), expires_at),)), _ok


@write_command(-3, keys=(1, -1, 2))
def mset(session: Session, args: list[bytes]) -> Prepared:
    if len(args) % 2:
        raise CommandError("ERR wrong number of arguments for 'mset' command")
    rows = tuple(
        (_key(args[i]), _value(session, args[i + 1]), None) for i in range(0, len(args), 2)
    )
    return ops.Put(rows), _ok


@write_command(-2, keys=(1, -1, 1), aliases=("unlink",))
def del_(session: Session, args: list[bytes]) -> Prepared:
    return ops.Delete(tuple(_key(a) for a in args)), int


@write_command(-3)
def expire(session: Session, args: list[bytes]) -> Prepared:
    return _expire(args, 1000, now_ms(), "expire")


@write_command(-3)
def pexpire(session: Session, args: list[bytes]) -> Prepared:
    return _expire(args, 1, now_ms(), "pexpire")


@write_command(-3)
def expireat(session: Session, args: list[bytes]) -> Prepared:
    return _expire(args, 1000, 0, "expireat")


@write_command(-3)
def pexpireat(session: Session, args: list[bytes]) -> Prepared:
    return _expire(args, 1, 0, "pexpireat")


def _expire(args: list[bytes], unit_ms: int, base: int, name: str) -> Prepared:
    """key time [NX|XX|GT|LT] (Redis 7; NX excludes the others, GT excludes LT)."""
    flags = {b"NX": False, b"XX": False, b"GT": False, b"LT": False}
    for option in args[2:]:
        if option.upper() not in flags:
            raise CommandError(f"ERR Unsupported option {option.decode(errors='replace')}")
        flags[option.upper()] = True
    nx, xx, gt, lt = flags.values()
    if nx and (xx or gt or lt):
        raise CommandError("ERR NX and XX, GT or LT options at the same time are not compatible")
    if gt and lt:
        raise CommandError("ERR GT and LT options at the same time are not compatible")
    when = _when(_int(args[1]), unit_ms, base, name)
    return ops.Expire(_key(args[0]), when, nx=nx, xx=xx, gt=gt, lt=lt), _bool


@write_command(2)
def persist(session: Session, args: list[bytes]) -> Prepared:
    return ops.Persist(_key(args[0])), _bool


@write_command(2)
def incr(session: Session, args: list[bytes]) -> Prepared:
    return ops.Incr(_key(args[0]), 1), int


@write_command(2)
def decr(session: Session, args: list[bytes]) -> Prepared:
    return ops.Incr(_key(args[0]), -1), int


@write_command(3)
def incrby(session: Session, args: list[bytes]) -> Prepared:
    return ops.Incr(_key(args[0]), _int(args[1])), int


@write_command(3)
def decrby(session: Session, args: list[bytes]) -> Prepared:
    by = _int(args[1])
    if by == -(2**63):
        raise CommandError("ERR decrement would overflow")
    return ops.Incr(_key(args[0]), -by), int


@write_command(3)
def getset(session: Session, args: list[bytes]) -> Prepared:
    return ops.SetIf(_key(args[0]), _value(session, args[1]), None, get=True), _same


@write_command(2)
def getdel(session: Session, args: list[bytes]) -> Prepared:
    return ops.GetDel(_key(args[0])), _same


@write_command(-2)
def getex(session: Session, args: list[bytes]) -> Prepared:
    """GETEX key [EX s|PX ms|EXAT s|PXAT ms|PERSIST]"""
    key = _key(args[0])
    if not args[1:]:
        return ops.GetEx(key), _same
    option = args[1].upper()
    if option == b"PERSIST" and len(args) == 2:
        return ops.GetEx(key, persist=True), _same
    if option not in (b"EX", b"PX", b"EXAT", b"PXAT") or len(args) != 3:
        raise CommandError("ERR syntax error")
    return ops.GetEx(key, _expiry(option, _int(args[2]), "getex")), _same


@write_command(-3, keys=(1, -1, 2))
def msetnx(session: Session, args: list[bytes]) -> Prepared:
    if len(args) % 2:
        raise CommandError("ERR wrong number of arguments for 'msetnx' command")
    rows = tuple(
        (_key(args[i]), _value(session, args[i + 1]), None) for i in range(0, len(args), 2)
    )
    return ops.MSetNX(rows), _bool


@write_command(3)
def append(session: Session, args: list[bytes]) -> Prepared:
    store = session.store
    return ops.Append(_key(args[0]), _value(session, args[1]), store.max_value), _same


@write_command(4)
def setrange(session: Session, args: list[bytes]) -> Prepared:
    offset = _int(args[1])
    if offset < 0:
        raise CommandError("ERR offset is out of range")
    value = _value(session, args[2])
    return ops.SetRange(_key(args[0]), offset, value, session.store.max_value), _same


@write_command(3)
def incrbyfloat(session: Session, args: list[bytes]) -> Prepared:
    return ops.IncrByFloat(_key(args[0]), args[1]), _same


@write_command(3, keys=(1, 2, 1))
def rename(session: Session, args: list[bytes]) -> Prepared:
    return ops.Rename(_key(args[0]), _key(args[1])), _ok


@write_command(3, keys=(1, 2, 1))
def renamenx(session: Session, args: list[bytes]) -> Prepared:
    return ops.Rename(_key(args[0]), _key(args[1]), nx=True), _bool


@write_command(-1, keys=(0, 0, 0))
def flushdb(session: Session, args: list[bytes]) -> Prepared:
    """FLUSHDB [ASYNC|SYNC]: either way it returns once the deletes have committed."""
    _flush_options(args)
    return ops.Flush(), _ok


@write_command(-1, keys=(0, 0, 0))
def flushall(session: Session, args: list[bytes]) -> Prepared:
    """FLUSHALL [ASYNC|SYNC]: every database (the tables it runs on are filled in as it
    runs, once 1 to 15's are made: see the handler and `execute`)."""
    _flush_options(args)
    return ops.FlushAll(()), _ok


def _flush_options(args: list[bytes]) -> None:
    if len(args) > 1 or (args and args[0].upper() not in (b"ASYNC", b"SYNC")):
        raise CommandError("ERR syntax error")


@lookup_command(2)
def strlen(session: Session, args: list[bytes]) -> Prepared:
    return _lookup(_key(args[0])), lambda value: len(value or b"")


@lookup_command(4, flags=("readonly",))
def getrange(session: Session, args: list[bytes]) -> Prepared:
    """GETRANGE key start end: inclusive, negative counts from the end (Redis's rules,
    clamped, and "" for a missing key)."""
    start, end = _int(args[1]), _int(args[2])

    def answer(value: bytes | None) -> bytes:
        if start < 0 and end < 0 and start > end:
            return b""
        length = len(value or b"")
        first = max(start + length if start < 0 else start, 0)
        last = min(max(end + length if end < 0 else end, 0), length - 1)
        if first > last or not length:
            return b""
        return (value or b"")[first : last + 1]

    return _lookup(_key(args[0])), answer


@read_command(2)
def expiretime(session: Session, args: list[bytes]) -> Prepared:
    return ops.Read(ops.expiry, (_key(args[0]),)), seconds_left


@read_command(2)
def pexpiretime(session: Session, args: list[bytes]) -> Prepared:
    return ops.Read(ops.expiry, (_key(args[0]),)), _same


@read_command(2, flags=("readonly",), keys=(0, 0, 0))
def keys(session: Session, args: list[bytes]) -> Prepared:
    """KEYS pattern: every key matching, in key order (Redis's is its hash order)."""
    matches = compile_pattern(args[0]).fullmatch
    return ops.Read(ops.keys, (literal_prefix(args[0]), matches)), _same


@read_command(1, flags=("readonly",), keys=(0, 0, 0))
def randomkey(session: Session, args: list[bytes]) -> Prepared:
    start = os.urandom(random.randint(1, 4))
    return ops.Read(ops.random_key, (start,)), _same


OBJECT_HELP = [
    "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ENCODING <key>",
    "    Return the kind of internal representation used in order to store the value",
    "    associated with a <key>.",
    "FREQ <key>",
    "    Return the access frequency index of the <key>. The returned integer is",
    "    proportional to the logarithm of the recent access frequency of the key.",
    "IDLETIME <key>",
    "    Return the idle time of the <key>, that is the approximated number of",
    "    seconds elapsed since the last access to the key.",
    "REFCOUNT <key>",
    "    Return the number of references of the value associated with the specified",
    "    <key>.",
    "HELP",
    "    Prints this help.",
]
NO_LFU = (
    "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please "
    "note that when switching between policies at runtime LRU and LFU data will take "
    "some time to adjust."
)
SHARED_REFCOUNT = 2147483647  # what Redis answers for its shared integers 0 to 9999


@lookup_command(-2, flags=("slow",), keys=(0, 0, 0))
def object_(session: Session, args: list[bytes]) -> Prepared:
    """OBJECT ENCODING|FREQ|IDLETIME|REFCOUNT key, OBJECT HELP, as a Redis with its
    defaults (maxmemory-policy noeviction) answers: the encoding Redis would give the
    value SET made (int, embstr up to 44 bytes, raw); no access times are kept, so
    IDLETIME is 0; FREQ is refused as Redis refuses it without an LFU policy."""
    sub = args[0].decode(errors="replace").lower()
    if sub not in ("encoding", "freq", "idletime", "refcount", "help"):
        raise CommandError(
            f"ERR unknown subcommand '{args[0].decode(errors='replace')}'. Try OBJECT HELP."
        )
    if len(args) != (1 if sub == "help" else 2):
        raise CommandError(f"ERR wrong number of arguments for 'object|{sub}' command")
    if sub == "help":
        return ops.Lookup((), lambda found, now: None), lambda _: [Simple(x) for x in OBJECT_HELP]

    def answer(value: bytes | None) -> Reply:
        if value is None:
            return None
        shared = _is_int(value) and 0 <= int(value) < 10_000
        if sub == "encoding":
            return b"int" if _is_int(value) else b"embstr" if len(value) <= 44 else b"raw"
        if sub == "refcount":
            return SHARED_REFCOUNT if shared else 1
        if sub == "freq":
            raise CommandError(NO_LFU)
        return 0

    return _lookup(_key(args[1])), answer


def _is_int(value: bytes) -> bool:
    """Would Redis keep this value as an integer (20 characters at most, a 64-bit
    integer as it reads one)?"""
    if len(value) > 20:
        return False
    try:
        parse_int(value)
    except NotAnInteger:
        return False
    return True


@read_command(-2, keys=(0, 0, 0))
def scan(session: Session, args: list[bytes]) -> Prepared:
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
    after = None if cursor == 0 else session.cursors.recall(cursor)
    if not strings:
        return ops.Read(ops.nothing), lambda _: [b"0", []]
    matches = None if pattern is None else compile_pattern(pattern).fullmatch

    def answer(found: tuple[list[bytes], bytes | None]) -> Reply:
        keys, last = found
        if matches is not None:
            keys = [k for k in keys if matches(k)]
        following = 0 if last is None else session.cursors.remember(last)
        return [str(following).encode(), keys]

    return ops.Read(ops.scan, (literal_prefix(pattern or b""), after, count)), answer


# Transactions: MULTI, the commands it queues, EXEC or DISCARD (the queueing itself, and
# the errors MULTI and EXEC give out of place, are the connection's: see server.py).


@command(1, "none", flags=("fast",))
async def multi(session: Session, args: list[bytes]) -> Reply:
    """MULTI. The connection opens the queue itself as it reads MULTI (the commands after
    it must be queued, not started), so this runs only if called directly."""
    session.multi = Multi()
    return OK


@command(1, "write", flags=("slow",), keys=(0, 0, 0))
async def exec_(session: Session, args: list[bytes]) -> Reply:
    """EXEC. The connection takes the queue as it reads EXEC and runs `execute` on it in
    its turn; this entry gives COMMAND INFO its shape, and has no queue to run."""
    raise CommandError("ERR EXEC without MULTI")


async def execute(session: Session, queued: Multi) -> Reply:
    """EXEC's reply: every queued command's, from one SQL transaction (`ops.Transaction`),
    or the null array if a watched key changed; EXECABORT if one was refused while
    queueing. Commands that touch no key (PING, ECHO ...) answer after it commits."""
    watch = session.watch
    session.unwatch()
    if queued.refused:
        raise CommandError(EXECABORT)
    if watch.touched:  # written by this process since WATCH: no need to ask the database
        return NULL_ARRAY
    store = session.store
    names = {lookup(args).name for args in queued.queued}  # type: ignore[union-attr]
    if names & {"select", "flushall"}:
        await store.databases()
    steps: list[Any] = []
    slots: list[tuple[Command, list[bytes], Callable[[Any], Reply] | Error | None]] = []
    db = session.db  # SELECT inside MULTI: the commands after it are in its database
    for args in queued.queued:
        found = lookup(args)
        assert found is not None  # unknown commands were refused while queueing
        if found.name == "select":
            with contextlib.suppress(CommandError):  # (its handler answers the error)
                db = _database(args[1])
        if found.prepare is None:
            slots.append((found, args, None))
            continue
        try:
            step, answer = found.prepare(session, args[1:])
        except Exception as exc:  # a syntax error, say: its reply, and the others run
            slots.append((found, args, error_reply(found.name, exc)))
            continue
        if isinstance(step, ops.FlushAll):
            step = ops.FlushAll(tuple(store.dialects()))
        steps.append(session.wrap(step, db))
        slots.append((found, args, answer))
    results: list[Any] = []
    if steps or watch:
        done = await session.store.apply(ops.Transaction(watch.watched(), tuple(steps)))
        if done is None:
            return NULL_ARRAY
        results = done
    replies: list[Reply] = []
    outcomes = iter(results)
    for found, args, how in slots:
        if isinstance(how, Error):
            replies.append(how)
            continue
        try:
            if how is None:
                replies.append(await found.handler(session, args[1:]))
                continue
            outcome = next(outcomes)
            if isinstance(outcome, Exception):
                raise outcome
            replies.append(how(outcome))
        except Exception as exc:
            replies.append(error_reply(found.name, exc))
    return replies


@command(1, "session", flags=("fast",))
async def discard(session: Session, args: list[bytes]) -> Reply:
    """DISCARD: the connection has dropped the queue as it read this; unwatch, in turn."""
    session.unwatch()
    return OK


@command(-2, "session", flags=("fast",), keys=(1, -1, 1))
async def watch(session: Session, args: list[bytes]) -> Reply:
    """WATCH key ...: remember each key's state now; EXEC compares (transaction.py)."""
    db, current, store = session.db, session.watch, session.store
    named = {ops.qualified(db, k): k for k in (_key(a) for a in args)}
    named = {q: k for q, k in named.items() if q not in current.seen}
    if not named:
        return OK
    session.server.watches.add(current, named)  # first: a write from now on marks it
    current.seen.update(dict.fromkeys(named))
    dialect = store.dialect(db)
    current.where.update({q: (dialect if db else None, k) for q, k in named.items()})
    try:
        seen = await store.read(ops.states(dialect, now_ms(), list(named.values())))
    except Exception:
        current.touched = True  # unknown: EXEC must not trust it
        raise
    current.seen.update({ops.qualified(db, k): state for k, state in seen.items()})
    return OK


@command(1, "session", flags=("fast",))
async def unwatch(session: Session, args: list[bytes]) -> Reply:
    session.unwatch()
    return OK


# Helpers for the commands.


def _same(result: Any) -> Reply:
    return cast(Reply, result)


def _ok(result: Any) -> Reply:
    return OK


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
