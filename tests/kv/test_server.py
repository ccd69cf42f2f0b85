"""The Redis-protocol server, with redis-py, redis-cli and raw sockets as clients."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import shutil
import socket
import struct
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from sdlab.kv import Store
from sdlab.kv.resp import request
from sdlab.kv.server import COMMANDS, RespServer

DOCS = Path(__file__).resolve().parents[2] / "docs" / "kv.md"


@pytest.fixture
async def server(backend_url: str) -> AsyncIterator[RespServer]:
    async with Store(backend_url, sweep_interval=0) as kv:
        server = RespServer(kv, port=0)
        await server.start()
        yield server
        await server.close()


@pytest.fixture
async def client(server: RespServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(port=server.port)  # redis-py 8: HELLO 3, then RESP3
    yield client
    await client.aclose()


async def test_redis_py_commands(client: aioredis.Redis) -> None:
    assert await client.ping()
    assert await client.set("k", b"\x00\xffv")
    assert await client.get("k") == b"\x00\xffv"
    assert await client.get("missing") is None
    assert await client.set("k", "x", nx=True) is None
    assert await client.set("k", "y", xx=True, ex=100)
    assert 99 <= await client.ttl("k") <= 100
    assert await client.persist("k")
    assert await client.ttl("k") == -1
    assert await client.set("p", "v", px=50)
    await asyncio.sleep(0.1)
    assert await client.get("p") is None
    assert await client.incr("n") == 1
    assert await client.incrby("n", 10) == 11
    assert await client.decr("n") == 10
    with pytest.raises(ResponseError, match="not an integer"):
        await client.incr("k")
    assert await client.mset({"a": "1", "b": "2"})
    assert await client.mget("a", "zz", "b") == [b"1", None, b"2"]
    assert await client.exists("a", "b", "zz") == 2
    assert await client.delete("a", "zz") == 1
    assert await client.expire("b", 10)
    assert await client.pttl("b") > 9000
    assert await client.echo("hi") == b"hi"
    assert await client.execute_command("SELECT", 0)
    with pytest.raises(ResponseError, match="out of range"):
        await client.execute_command("SELECT", 16)
    assert (await client.info())["redis_version"]
    assert await client.dbsize() == 3  # k, n, b
    assert await client.type("k") == b"string"


async def test_the_string_and_keyspace_commands_with_redis_py(client: aioredis.Redis) -> None:
    await client.mset({"user:1": "a", "user:2": "b", "other": "c"})
    assert sorted(await client.keys("user:*")) == [b"user:1", b"user:2"]
    assert await client.randomkey() in {b"user:1", b"user:2", b"other"}
    assert await client.append("other", "def") == 4
    assert await client.getset("other", "x") == b"cdef"
    assert await client.set("other", "y", get=True) == b"x"
    assert await client.getex("other", ex=100) == b"y"
    assert 99 <= await client.ttl("other") <= 100
    assert await client.expire("other", 50, gt=True) is False
    assert await client.expire("other", 50, lt=True) is True
    assert await client.incrbyfloat("f", 0.1) == 0.1
    assert await client.rename("f", "g")
    assert await client.getdel("g") == b"0.1"
    assert not await client.msetnx({"user:1": "z", "new": "z"})
    assert await client.get("new") is None
    assert await client.object("encoding", "user:1") == b"embstr"
    assert await client.flushdb()
    assert await client.dbsize() == 0
    assert await client.randomkey() is None


def documented_commands() -> set[str]:
    """The names in docs/kv.md's "Commands: GET, SET (EX, ...), ..., QUIT." paragraph."""
    paragraph = DOCS.read_text().split("\nCommands: ", 1)[1].split("\n\n", 1)[0]
    items = re.sub(r"\([^)]*\)", "", paragraph.replace("\n", " ")).split(",")
    words = [item.split() for item in items]
    return {(w[1] if w[0] == "and" else w[0]).rstrip(".").lower() for w in words}


@pytest.mark.parametrize("backend_url", ["sqlite://"], indirect=False)
async def test_command_describes_the_commands_the_docs_promise(
    server: RespServer, client: aioredis.Redis
) -> None:
    promised = documented_commands()
    resp3 = aioredis.Redis(port=server.port, protocol=3)
    try:
        assert set(await resp3.command()) == promised  # it reads Redis 7's ten fields
    finally:
        await resp3.aclose()
    table = await client.command()
    assert set(table) == promised
    assert (table["get"]["arity"], set(table["get"]["flags"])) == (2, {"readonly", "fast"})
    mset = table["mset"]
    assert (mset["arity"], mset["first_key_pos"], mset["last_key_pos"], mset["step_count"]) == (
        -3, 1, -1, 2,
    )  # fmt: skip
    assert "write" in table["expire"]["flags"]
    assert await client.command_count() == len(promised)
    assert {name.decode() for name in await client.command_list()} == promised
    assert sorted(await client.command_list(pattern="*EXPIRE*")) == [
        b"expire", b"expireat", b"expiretime", b"pexpire", b"pexpireat", b"pexpiretime",
    ]  # fmt: skip
    assert await client.command_list(category="string") == []  # no ACL categories here
    got, nosuch = await client.execute_command("COMMAND INFO", "GET", "nosuch")
    assert got[:2] == [b"get", 2]
    assert nosuch is None
    assert len(await client.execute_command("COMMAND INFO")) == len(promised)  # all
    assert await client.execute_command("COMMAND DOCS") == {}  # no help texts: a map
    assert await client.execute_command("COMMAND DOCS", "get") == {}
    with pytest.raises(ResponseError, match="unknown subcommand 'GETKEYS'"):
        await client.execute_command("COMMAND GETKEYS", "get", "k")


@pytest.mark.parametrize("backend_url", ["sqlite://"], indirect=False)
async def test_command_info_agrees_with_redis(client: aioredis.Redis, redis: Any) -> None:
    """Arity, key positions and the write/readonly flags, as real Redis has them."""

    def described(entry: list[Any]) -> tuple[Any, ...]:
        name, arity, flags, first, last, step = entry[:6]
        kinds = {f.decode() if isinstance(f, bytes) else f for f in flags} & {"write", "readonly"}
        return (name.decode() if isinstance(name, bytes) else name, arity, first, last, step, kinds)

    names = [name.decode() for name in await client.command_list()]
    ours = [described(e) for e in await client.execute_command("COMMAND INFO", *names)]
    theirs = [described(e) for e in await redis.execute_command("COMMAND INFO", *names)]
    assert ours == theirs


async def test_resp2_clients_too(server: RespServer) -> None:
    client = aioredis.Redis(port=server.port, protocol=2)
    try:
        assert await client.get("missing") is None
        assert await client.config_get("appendonly") == {"appendonly": "no"}
    finally:
        await client.aclose()


async def test_scan_with_match_and_count(client: aioredis.Redis) -> None:
    await client.mset({f"user:{i}": "x" for i in range(30)} | {"other": "x", "user;": "x"})
    found = [key async for key in client.scan_iter(match="user:*", count=7)]
    assert sorted(found) == sorted(f"user:{i}".encode() for i in range(30))
    assert [k async for k in client.scan_iter(match="user:1?")] == [
        f"user:{i}".encode() for i in range(10, 20)
    ]
    with pytest.raises(ResponseError, match="invalid cursor"):
        await client.scan(cursor=12345)


async def test_scan_takes_the_match_of_each_call_as_redis_does(client: aioredis.Redis) -> None:
    await client.mset({f"a{i}": "x" for i in range(5)} | {f"b{i}": "x" for i in range(5)})
    cursor, first = await client.scan(0, match="a*", count=2)
    assert first == [b"a0", b"a1"]
    # The cursor is a place in the key order; what this call asks for is its own.
    assert await client.scan(cursor, match="b*", count=100) == (
        0, [b"b0", b"b1", b"b2", b"b3", b"b4"],
    )  # fmt: skip
    assert await client.scan(cursor, count=100) == (
        0, [b"a2", b"a3", b"a4", b"b0", b"b1", b"b2", b"b3", b"b4"],
    )  # fmt: skip


async def test_scan_checks_every_option_and_takes_a_cursor_of_digits_only(
    client: aioredis.Redis,
) -> None:
    await client.mset({"k1": "x", "k2": "x"})
    assert await client.scan(0, _type="hash") == (0, [])  # every key is a string
    for options in (["TYPE", "hash", "COUNT", "0"], ["TYPE", "hash", "BOGUS", "1"]):
        with pytest.raises(ResponseError, match="syntax error"):
            await client.execute_command("SCAN", "0", *options)
    cursor, _ = await client.scan(0, count=1)
    digits = str(cursor)
    too_long = "9" * 5000  # int() refuses over 4,300 digits, with a ValueError
    for spelled in (
        f"{digits[0]}_{digits[1:]}",
        f"+{digits}",
        f" {digits}",
        f"{digits}\n",
        too_long,
    ):
        with pytest.raises(ResponseError, match="invalid cursor"):
            await client.execute_command("SCAN", spelled)
    assert await client.execute_command("SCAN", f"00{digits}") == (0, [b"k2"])


async def test_a_pipeline_sees_its_own_writes_in_order(client: aioredis.Redis) -> None:
    async with client.pipeline(transaction=False) as pipe:
        pipe.set("k", 1).get("k").incr("k").get("k").set("k", "x").get("k").delete("k")
        pipe.get("k").incr("k").incr("k").exists("k")
        assert await pipe.execute() == [True, b"1", 2, b"2", True, b"x", 1, None, 1, 2, 1]


async def test_sets_queued_at_once_keep_their_place_among_other_writes(
    server: RespServer,
) -> None:
    """A SET goes into the batcher as it is read, an INCR in a task that queues its
    write later: in one pipeline, each SET must still commit after the INCR before it."""
    sent = [
        ("INCRBY", "k", "5"), ("SET", "k", "1"), ("INCR", "k"), ("SET", "k", "10"),
        ("SET", "k", "x", "EX", "0"), ("INCRBY", "k", "2"), ("SET", "k", "20"),
        ("DEL", "k"), ("SET", "k", "30"), ("INCR", "k"), ("GET", "k"),
    ]  # fmt: skip
    got = await raw(server.port, b"".join(request(*args) for args in sent))
    assert got == (
        b":5\r\n+OK\r\n:2\r\n+OK\r\n-ERR invalid expire time in 'set' command\r\n"
        b":12\r\n+OK\r\n:1\r\n+OK\r\n:31\r\n$2\r\n31\r\n"
    )


async def test_a_run_of_writes_after_a_read_reaches_the_batcher_in_order() -> None:
    """`GET x` then `SET k 0` ... `SET k 39`: the SETs wait for the read, then must go
    into the batcher in the order sent. Sent in random chunks while reads take a random
    few milliseconds, tasks waiting on one gate did not wake in the order they were made,
    and the last GET read an earlier SET's value in about one pipeline in seven."""
    sent = [("GET", "x"), *(("SET", "k", str(i)) for i in range(40)), ("GET", "k")]
    data = b"".join(request(*args) for args in sent)
    chance = random.Random(7)
    async with Store("sqlite://", sweep_interval=0) as kv:
        read = kv.backend.read

        async def slow_read(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(chance.random() * 0.004)
            return await read(*args, **kwargs)

        kv.backend.read = slow_read  # type: ignore[method-assign]
        server = RespServer(kv, port=0)
        await server.start()
        try:
            last = []
            for _ in range(150):
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                for start in range(0, len(data), size := chance.randint(1, 400)):
                    writer.write(data[start : start + size])
                    await writer.drain()
                    if chance.random() < 0.3:
                        await asyncio.sleep(chance.random() * 0.003)
                writer.write(request("QUIT"))
                got = await asyncio.wait_for(reader.read(-1), 10)
                writer.close()
                last.append(got.split(b"\r\n")[-3])  # the GET's value, before QUIT's +OK
        finally:
            await server.close()
    assert set(last) == {b"39"}


async def test_a_client_reset_mid_pipeline_stops_its_replies(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client that pipelines 3,000 commands and resets the connection: the server stops
    writing to it (asyncio logs every write to a lost socket after the fifth) and drops
    the connection."""
    data = b"".join(request("SET", f"k{i}", "v") + request("GET", f"k{i}") for i in range(1500))
    async with Store("sqlite://", sweep_interval=0) as kv:
        server = RespServer(kv, port=0)
        await server.start()
        try:
            with socket.create_connection(("127.0.0.1", server.port)) as client:
                client.sendall(data)
                await asyncio.sleep(0.005)
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await asyncio.sleep(0.5)  # for the replies it has read to be answered
            assert not server.connections
        finally:
            await server.close()
    assert not [r for r in caplog.records if "socket.send() raised" in r.getMessage()]


async def test_many_clients_at_once_group_their_writes(server: RespServer) -> None:
    clients = [aioredis.Redis(port=server.port) for _ in range(20)]
    try:
        await asyncio.gather(
            *(c.set(f"k{i}:{j}", j) for i, c in enumerate(clients) for j in range(25))
        )
        stats = server.store.stats()
        assert stats["writes"] == 500
        assert stats["batches"] < 500
        assert await clients[0].dbsize() == 500
    finally:
        for c in clients:
            await c.aclose()


async def raw(port: int, data: bytes) -> bytes:
    """Send bytes, read until the server closes or goes quiet."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    got = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 1.0):
            got += chunk
    except TimeoutError:
        pass
    writer.close()
    return got


async def test_unknown_commands_and_wrong_arity_get_errors(server: RespServer) -> None:
    got = await raw(server.port, request("LPUSH") + request("GET") + request("PING"))
    assert got == (
        b"-ERR unknown command 'LPUSH', with args beginning with: \r\n"
        b"-ERR wrong number of arguments for 'get' command\r\n+PONG\r\n"
    )


async def test_a_malformed_frame_gets_an_error_then_the_connection_closes(
    server: RespServer,
) -> None:
    got = await raw(server.port, request("SET", "k", "v") + b"*1\r\n+oops\r\n" + request("PING"))
    assert got == b"+OK\r\n-ERR Protocol error: expected '$', got '+'\r\n"


async def test_a_value_far_over_the_limit_is_refused_unread_saying_the_limit() -> None:
    async with Store("sqlite://", sweep_interval=0, max_value=1000) as kv:
        server = RespServer(kv, port=0)
        await server.start()
        try:
            # Just over: read whole, refused, and the connection goes on.
            over = request("SET", "k", b"x" * 1001) + request("QUIT")
            assert await raw(server.port, over) == (
                b"-ERR a value is at most 1000 bytes, this one is 1001\r\n+OK\r\n"
            )
            # Over the limit and 64 KiB: refused on its length line, before it is sent.
            far = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$66537\r\n"
            assert await raw(server.port, far) == (
                b"-ERR Protocol error: invalid bulk length: 66537 bytes, at most 66536\r\n"
            )
        finally:
            await server.close()


async def test_inline_commands_and_quit(server: RespServer) -> None:
    got = await raw(server.port, b"SET a 1\r\nGET a\r\nQUIT\r\nGET a\r\n")
    assert got == b"+OK\r\n$1\r\n1\r\n+OK\r\n"  # nothing after QUIT


@pytest.mark.parametrize("backend_url", ["sqlite://"], indirect=False)
async def test_hello_changes_the_protocol_of_the_replies_after_it_only(
    server: RespServer,
) -> None:
    got = await raw(
        server.port,
        request("GET", "missing") + request("HELLO", "3") + request("GET", "missing")
        + request("QUIT"),
    )  # fmt: skip
    assert got.startswith(b"$-1\r\n%7\r\n")  # the RESP2 null, then HELLO's RESP3 map
    assert got.endswith(b"_\r\n+OK\r\n")  # the RESP3 null


@pytest.mark.parametrize("backend_url", ["sqlite://"], indirect=False)
async def test_redis_cli_unchanged(server: RespServer) -> None:
    cli = shutil.which("redis-cli")
    assert cli is not None, "redis-cli is installed by `sdlab infra up --install`"

    def run(*args: str) -> str:
        done = subprocess.run(
            [cli, "-p", str(server.port), *args], capture_output=True, text=True, timeout=30
        )
        return done.stdout.strip()

    assert await asyncio.to_thread(run, "set", "greeting", "hello", "EX", "100") == "OK"
    assert await asyncio.to_thread(run, "get", "greeting") == "hello"
    assert await asyncio.to_thread(run, "incr", "greeting") == (
        "ERR value is not an integer or out of range"
    )
    assert await asyncio.to_thread(run, "command", "count") == str(len(COMMANDS))
    assert await asyncio.to_thread(run, "command", "docs") == ""  # none: its own help
    await asyncio.to_thread(run, "mset", "a:1", "x", "a:2", "y")
    assert (await asyncio.to_thread(run, "--scan", "--pattern", "a:*")).split() == ["a:1", "a:2"]


@pytest.mark.parametrize("backend_url", ["sqlite://"], indirect=False)
async def test_redis_benchmark_pipelined(server: RespServer) -> None:
    program = shutil.which("redis-benchmark")
    assert program is not None
    done = await asyncio.to_thread(
        subprocess.run,
        [program, "-p", str(server.port), "-t", "set,get", "-n", "2000", "-c", "10",
         "-P", "16", "-r", "100", "--csv"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert '"SET"' in done.stdout
    assert '"GET"' in done.stdout
    assert server.store.stats()["writes"] >= 2000
    assert server.store.stats()["largest_batch"] > 1


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    """One whole RESP2 reply, as the raw bytes it came in."""
    line = await reader.readuntil(b"\r\n")
    if line[:1] == b"$" and line != b"$-1\r\n":
        return line + await reader.readexactly(int(line[1:-2]) + 2)
    if line[:1] == b"*" and line != b"*-1\r\n":
        return line + b"".join([await read_reply(reader) for _ in range(int(line[1:-2]))])
    return line


async def replies(port: int, commands: list[list[str]]) -> list[bytes]:
    """Each command's reply, one command at a time, on one RESP2 connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        answers = []
        for args in commands:
            writer.write(request(*args))
            answers.append(await read_reply(reader))
        return answers
    finally:
        writer.close()


# Run on our server and on the real Redis, one after the other: every reply must be the
# same, byte for byte (errors included: clients match on their text). `{k}` is a prefix
# of the test's own, so the real Redis (shared) only sees keys of this test.
SAME_AS_REDIS = """
SET {k}a 1 EX 0
SET {k}a 1 EX -5
SET {k}a 1 PX 0
SET {k}a 1 EX 9223372036854775807
SET {k}a 1 EX 9223372036854775
SET {k}a 1 PX 9223372036854775807
SET {k}a 1 EXAT 9223372036854775807
SET {k}a 1 PXAT 9223372036854775807
EXISTS {k}a
SETEX {k}b 0 x
SETEX {k}b 9223372036854775807 x
PSETEX {k}b 9223372036854775807 x
EXISTS {k}b
SET {k}c 5
EXPIRE {k}c 100 BOGUS
PEXPIRE {k}c 100 NX BOGUS
EXPIRE {k}c 9223372036854775807
EXPIRE {k}c -9223372036854775808
PEXPIRE {k}c 9223372036854775807
EXPIREAT {k}c 9223372036854775807
PEXPIREAT {k}c 9223372036854775807
TTL {k}c
EXPIRE {k}c -1
EXISTS {k}c
SET {k}n 9223372036854775807
INCR {k}n
SET {k}n -9223372036854775808
DECR {k}n
DECRBY {k}n -9223372036854775808
INCRBY {k}n 9223372036854775808
INCRBY {k}n 007
SET {k}n +1
INCR {k}n
SET {k}n 1.5
INCR {k}n
MSET {k}a 1 {k}b
GET {k}a {k}b
SELECT abc
SELECT 0
ECHO
PING a b
SCAN 0 TYPE hash COUNT 0
SCAN 0 TYPE hash BOGUS 1
SCAN 1_0
SCAN 0x1
SCAN 18446744073709551616
NOSUCH {k}x y
COMMAND COUNT x
COMMAND INFO nosuch
COMMAND LIST x
COMMAND LIST FILTERBY PATTERN
COMMAND LIST FILTERBY BOGUS x
COMMAND LIST FILTERBY MODULE nosuch
COMMAND DOCS nosuch
nosuch
Get
QUIT now
"""


# The same for transactions: what MULTI queues and refuses, EXEC's array with the errors
# of commands that failed inside it, EXECABORT, WATCH's null array after a write (this
# connection's own), and MULTI, EXEC, DISCARD and WATCH out of place.
SAME_AS_REDIS_IN_TRANSACTIONS = """
DEL {k}a {k}b {k}c {k}n
MULTI
MULTI
SET {k}a 1
INCR {k}a
GET {k}a
PING
ECHO e
SELECT 0
EXEC
MULTI
WATCH {k}a
NOSUCH {k}a
SET {k}a 2
EXEC
GET {k}a
MULTI
GET
EXEC
EXEC
DISCARD
UNWATCH
WATCH
SET {k}s x
MULTI
INCR {k}s
SET {k}b 1 EX 0
SET {k}c 1
DEL {k}c {k}zz
MGET {k}s {k}c
TTL {k}s
EXEC
WATCH {k}a
SET {k}a 3
MULTI
GET {k}a
EXEC
WATCH {k}a
MULTI
GET {k}a
EXEC
WATCH {k}a {k}b
UNWATCH
SET {k}a 4
MULTI
GET {k}a
EXEC
WATCH {k}a
MULTI
SET {k}a 5
DISCARD
MULTI
GET {k}a
EXEC
MULTI
EXEC
MULTI
UNWATCH
DISCARD
DISCARD
MULTI
EXEC x
EXEC
WATCH {k}n
INCR {k}n
MULTI
INCR {k}n
EXEC
WATCH {k}a
MULTI
SET {k}a 1 BOGUS
SET {k}b 2
EXEC
MGET {k}a {k}b
MULTI
DBSIZE x
EXEC
MULTI
EXISTS {k}a
EXEC
MULTI
APPEND {k}ap x
APPEND {k}ap y
GETSET {k}ap z
RENAME {k}nosuch {k}b
RENAME {k}ap {k}ap2
INCRBYFLOAT {k}ap2 1
INCRBYFLOAT {k}fl 1.5
SET {k}fl 2 GET
GETDEL {k}fl
MSETNX {k}m1 1 {k}m2 2
SETRANGE {k}m1 3 x
GETRANGE {k}m1 0 -1
EXPIRE {k}m1 100 GT
EXPIRE {k}m1 100 NX
GETEX {k}m1 PERSIST
OBJECT ENCODING {k}m2
EXEC
"""


# The string and keyspace commands of Redis 7 beyond GET and SET.
SAME_AS_REDIS_STRINGS = """
APPEND {k}s abc
APPEND {k}s def
GET {k}s
STRLEN {k}s
STRLEN {k}none
APPEND {k}s
SETRANGE {k}s 1 XY
SETRANGE {k}s 10 Z
GET {k}s
SETRANGE {k}s -1 x
SETRANGE {k}s 1 ""
SETRANGE {k}none 5 ""
EXISTS {k}none
SETRANGE {k}s 536870912 x
SETRANGE {k}s x y
SET {k}r Hello
GETRANGE {k}r 0 3
GETRANGE {k}r -3 -1
GETRANGE {k}r 0 -1
GETRANGE {k}r 10 100
GETRANGE {k}r -1 -5
GETRANGE {k}r -100 2
GETRANGE {k}r 3 1
GETRANGE {k}none 0 -1
GETRANGE {k}r a 1
GETSET {k}r World
GETSET {k}none2 x
GET {k}none2
GETDEL {k}none2
GETDEL {k}none2
SET {k}e v EX 100
GETEX {k}e
TTL {k}e
GETEX {k}e PERSIST
TTL {k}e
GETEX {k}e PX 50000
PTTL {k}e
GETEX {k}e EX 0
GETEX {k}e EX 10 PX 10
GETEX {k}e BOGUS
GETEX {k}e EXAT 1
EXISTS {k}e
GETEX {k}missing EX 10
SET {k}g old
SET {k}g new GET
SET {k}g newer NX GET
SET {k}g newest XX GET EX 100
TTL {k}g
SET {k}nothing x XX GET
EXISTS {k}nothing
SET {k}g v GET GET
MSETNX {k}m1 a {k}m2 b
MSETNX {k}m2 c {k}m3 d
MGET {k}m1 {k}m2 {k}m3
MSETNX {k}m1
SET {k}f 10.50
INCRBYFLOAT {k}f 0.1
INCRBYFLOAT {k}f -5
INCRBYFLOAT {k}f 5.0e3
INCRBYFLOAT {k}f 2.0e2
INCRBYFLOAT {k}new 3
INCRBYFLOAT {k}new 1.1
INCRBYFLOAT {k}new abc
INCRBYFLOAT {k}new inf
INCRBYFLOAT {k}new 1e5000
INCRBYFLOAT {k}r 1
SET {k}x 1
RENAME {k}x {k}y
GET {k}y
EXISTS {k}x
RENAME {k}x {k}z
RENAME {k}y {k}y
RENAMENX {k}y {k}y
SET {k}x 2 EX 100
RENAMENX {k}x {k}y
RENAMENX {k}x {k}w
TTL {k}w
RENAME {k}w {k}y
GET {k}y
TTL {k}y
EXPIRETIME {k}none
EXPIRETIME {k}r
PEXPIRETIME {k}r
EXPIREAT {k}r 33177117420
EXPIRETIME {k}r
PEXPIREAT {k}r 33177117420123
PEXPIRETIME {k}r
EXPIRETIME {k}r
SET {k}t v
EXPIRE {k}t 100 XX
EXPIRE {k}t 100 GT
EXPIRE {k}t 100 LT
TTL {k}t
EXPIRE {k}t 200 NX
EXPIRE {k}t 200 LT
EXPIRE {k}t 200 GT
TTL {k}t
EXPIRE {k}t 50 GT
EXPIRE {k}t 50 XX LT
TTL {k}t
EXPIRE {k}t 50 NX XX
EXPIRE {k}t 50 GT LT
EXPIRE {k}t 50 NX GT
EXPIRE {k}t 50 bogus
PEXPIRE {k}t 1000000 XX GT
PTTL {k}t
EXPIRE {k}t -1 XX
EXISTS {k}t
EXPIRE {k}missing 10 NX
KEYS {k}r
KEYS {k}nomatch*
KEYS {k}[r]
SET {k}i 123
SET {k}big 12345678901234567890
SET {k}long aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
SET {k}small 44
SET {k}neg -5
SET {k}zero 007
OBJECT ENCODING {k}i
OBJECT ENCODING {k}big
OBJECT ENCODING {k}long
OBJECT ENCODING {k}r
OBJECT ENCODING {k}zero
OBJECT ENCODING {k}absent
OBJECT REFCOUNT {k}small
OBJECT REFCOUNT {k}i
OBJECT REFCOUNT {k}neg
OBJECT REFCOUNT {k}r
OBJECT REFCOUNT {k}absent
OBJECT IDLETIME {k}r
OBJECT IDLETIME {k}absent
OBJECT FREQ {k}r
OBJECT FREQ {k}absent
OBJECT HELP
OBJECT HELP x
OBJECT ENCODING
OBJECT BOGUS {k}r
OBJECT
FLUSHDB BOGUS
FLUSHALL ASYNC SYNC
CLIENT LIST TYPE bogus
CLIENT LIST ID x
CLIENT LIST ID 0
CLIENT LIST bogus
"""


@pytest.mark.parametrize(
    "script",
    [SAME_AS_REDIS, SAME_AS_REDIS_IN_TRANSACTIONS, SAME_AS_REDIS_STRINGS],
    ids=["commands", "transactions", "strings"],
)
async def test_replies_match_real_redis(
    server: RespServer, redis: Any, redis_url: str, namespace: str, script: str
) -> None:
    commands = [line.format(k=f"{namespace}:").split() for line in script.splitlines()]
    commands = [args for args in commands if args]
    ours = await replies(server.port, commands)
    theirs = await replies(urlsplit(redis_url).port or 6379, commands)
    differ = [
        f"{' '.join(args)}: ours {a!r}, Redis {b!r}"
        for args, a, b in zip(commands, ours, theirs, strict=True)
        if a != b and not same_ttl(args, a, b)
    ]
    assert not differ, "\n".join(differ)


def same_ttl(args: list[str], ours: bytes, theirs: bytes) -> bool:
    """A TTL counts down from the moment it is asked: the two servers are asked a few
    milliseconds apart, so a second (or some milliseconds) may have passed in between."""
    slack = {"TTL": 1, "PTTL": 250}.get(args[0].upper())
    if slack is None or not (ours[:1] == theirs[:1] == b":"):
        return False
    a, b = int(ours[1:]), int(theirs[1:])
    return a >= 0 and b >= 0 and abs(a - b) <= slack  # -1 and -2 are states, not times


# Whole-database commands: on a private Redis, never the shared one.
SAME_AS_A_PRIVATE_REDIS = """
SET a 1
SET b 2 EX 100
DBSIZE
KEYS [a]*
WATCH a
FLUSHDB
MULTI
GET a
EXEC
DBSIZE
RANDOMKEY
SET only 1
RANDOMKEY
SET c 1
FLUSHALL SYNC
DBSIZE
GET c
SET d 1
MULTI
SET e 1
FLUSHDB ASYNC
SET f 1
EXEC
KEYS *
FLUSHALL
SELECT 16
SELECT -1
SELECT 15
GET a
SET a 15
DBSIZE
SELECT 0
GET a
SET a 0
SELECT 1
SET k 1
WATCH k
SELECT 2
SET k 2
MULTI
GET k
SELECT 1
GET k
EXEC
SET k 1b
FLUSHDB
DBSIZE
SELECT 1
GET k
SELECT 0
WATCH a
SELECT 15
SET a 15b
SELECT 0
MULTI
GET a
EXEC
MGET a k
SELECT 15
MGET a k
FLUSHALL
DBSIZE
SELECT 1
DBSIZE
SELECT 0
DBSIZE
"""


async def test_databases_and_flushes_match_a_private_redis(
    server: RespServer, servers: Any
) -> None:
    (private,) = servers.redis()
    commands = [line.split() for line in SAME_AS_A_PRIVATE_REDIS.splitlines() if line]
    ours = await replies(server.port, commands)
    theirs = await replies(private.port, commands)
    differ = [
        f"{' '.join(args)}: ours {a!r}, Redis {b!r}"
        for args, a, b in zip(commands, ours, theirs, strict=True)
        if a != b
    ]
    assert not differ, "\n".join(differ)


GLOB_KEYS = ["a*b", "axb", "a\\xb", "a?", "ab", "a^", "ac", "a]", "a-", "a[", "a\\", "h\\llo"]
GLOB_PATTERNS = [
    "a*b", "a\\*b", "a?", "a\\?", "a[^b]", "a[!b]", "a[\\]]", "a[]]", "a[a-c]", "a[c-a]",
    "a[-]", "a[b", "a[", "a\\[", "a\\", "h\\\\llo", "a[a-]", "*", "A*",
]  # fmt: skip


async def test_scan_match_reads_patterns_as_redis_does(
    client: aioredis.Redis, redis: Any, namespace: str
) -> None:
    # Redis's glob is not fnmatch's: \\ quotes, [^a] negates, a reversed range is a range.
    keys = {f"{namespace}:{key}": "x" for key in GLOB_KEYS}
    await client.mset(keys)
    await redis.mset(keys)
    for pattern in GLOB_PATTERNS:
        match = f"{namespace}:{pattern}"
        ours = sorted([key async for key in client.scan_iter(match=match, count=5)])
        theirs = sorted([key async for key in redis.scan_iter(match=match, count=1000)])
        assert ours == theirs, f"MATCH {pattern!r}"


async def test_scan_cursors_belong_to_their_connection(server: RespServer) -> None:
    """One client's scans must not push out another's cursor, nor can it use one."""
    first, second = aioredis.Redis(port=server.port), aioredis.Redis(port=server.port)
    try:
        await first.mset({f"k{i:02}": "x" for i in range(20)})
        cursor, page = await first.scan(0, count=5)
        for _ in range(1100):  # more than a connection remembers
            await second.scan(0, count=1)
        assert await first.scan(cursor, count=100) == (
            0,
            [f"k{i:02}".encode() for i in range(5, 20)],
        )
        with pytest.raises(ResponseError, match="invalid cursor"):
            await second.scan(cursor)
        assert page == [f"k{i:02}".encode() for i in range(5)]
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_client_that_stops_reading_is_disconnected_and_its_replies_dropped() -> None:
    """GETs of a 100 KB value, never read: past the output limit the server drops the
    connection (and what it held for it); the other clients go on."""
    async with Store("sqlite://", sweep_interval=0) as kv:
        server = RespServer(kv, port=0, output_limit=2 * 1024 * 1024)
        await server.start()
        try:
            await kv.set("big", b"x" * 100_000)
            with socket.create_connection(("127.0.0.1", server.port)) as reader:
                reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                reader.setblocking(False)
                gets = request("GET", "big") * 100
                sent = 0
                for _ in range(400):  # 40,000 GETs (4 GB of replies) at most
                    with contextlib.suppress(BlockingIOError):
                        sent += reader.send(gets)
                    await asyncio.sleep(0.005)
                    if not server.connections:
                        break
                assert not server.connections, "still connected"
            assert server.output_disconnections == 1
            assert sent < 400 * len(gets)
            client = aioredis.Redis(port=server.port)
            try:
                assert len(await client.get("big") or b"") == 100_000
                stats = await client.info("stats")
                assert stats["client_output_buffer_limit_disconnections"] == 1
            finally:
                await client.aclose()
        finally:
            await server.close()


async def test_the_reads_of_one_turn_share_one_select(
    server: RespServer, client: aioredis.Redis
) -> None:
    await client.mset({f"k{i}": str(i) for i in range(100)})
    await client.expire("k1", 100)
    before = server.store.stats()
    async with client.pipeline(transaction=False) as pipe:
        for i in range(100):
            pipe.get(f"k{i}")
        pipe.mget("k3", "nope", "k4").exists("k5", "k5", "nope").ttl("k1").get("nope")
        got = await pipe.execute()
    assert got[:100] == [str(i).encode() for i in range(100)]
    assert got[100:103] == [[b"3", None, b"4"], 2, 100]
    assert got[103] is None
    after = server.store.stats()
    assert after["lookups"] - before["lookups"] == 104
    assert after["reads"] - before["reads"] <= 3  # one per loop turn the pipeline came in


async def test_redis_py_in_database_15_and_redis_cli_n(server: RespServer) -> None:
    fifteen = aioredis.Redis(port=server.port, db=15)  # the usual test setup
    zero = aioredis.Redis(port=server.port)
    try:
        await fifteen.set("k", "in 15")
        await zero.set("k", "in 0")
        assert await fifteen.get("k") == b"in 15"
        assert await fifteen.pipeline().set("n", 1).incr("n").execute() == [True, 2]
        assert await fifteen.flushdb()
        assert await fifteen.dbsize() == 0
        assert await zero.get("k") == b"in 0"
        cli = shutil.which("redis-cli")
        assert cli is not None
        done = await asyncio.to_thread(
            subprocess.run, [cli, "-p", str(server.port), "-n", "3", "set", "c", "3"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.stdout.strip() == "OK"
        three = aioredis.Redis(port=server.port, db=3)
        try:
            assert await three.get("c") == b"3"
            assert await zero.get("c") is None
            assert await zero.flushall()
            assert await three.get("c") is None
        finally:
            await three.aclose()
    finally:
        await fifteen.aclose()
        await zero.aclose()
