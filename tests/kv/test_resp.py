"""The Redis-protocol parser: exact cases, and fuzzing with hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdlab.kv.resp import Error, Map, Parser, ProtocolError, Simple, encode, request


def parse(data: bytes) -> list[list[bytes]]:
    parser = Parser()
    parser.feed(data)
    return list(parser)


def test_requests_and_inline_commands() -> None:
    assert parse(request("SET", "k", b"\x00\r\n")) == [[b"SET", b"k", b"\x00\r\n"]]
    assert parse(b"PING\r\nGET  k\n\r\n") == [[b"PING"], [b"GET", b"k"]]
    assert parse(b"*0\r\n*-1\r\n" + request("PING")) == [[b"PING"]]  # empty arrays skipped


def test_a_request_arrives_in_pieces() -> None:
    data = request("SET", "key", "x" * 1000) + request("GET", "key")
    parser = Parser()
    got: list[list[bytes]] = []
    for i in range(0, len(data), 7):
        parser.feed(data[i : i + 7])
        got += list(parser)
    assert got == [[b"SET", b"key", b"x" * 1000], [b"GET", b"key"]]
    assert parser.buffered == 0


def test_a_long_request_in_pieces_is_parsed_once() -> None:
    # What has arrived of a long request is parsed as it comes, and not again with each
    # new piece: a bulk MSET arriving in 64 KiB reads would otherwise cost time
    # quadratic in its length, with every other client of the server waiting.
    data = request("MSET", *(f"k{i}" for i in range(20_000)))
    parser = Parser()
    parser.feed(data[: len(data) // 2])
    assert list(parser) == []
    assert parser.buffered < 64  # the arguments that arrived whole are parsed already
    parser.feed(data[len(data) // 2 :])
    assert list(parser) == [[b"MSET", *(f"k{i}".encode() for i in range(20_000))]]
    assert parser.buffered == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"*x\r\n", "invalid multibulk length"),
        (b"*1\r\n+PING\r\n", "expected '\\$', got '\\+'"),
        (b"*1\r\n$-5\r\n", "invalid bulk length"),
        (b"*1\r\n$2\r\nabcd\r\n", "expected CRLF"),
        (b"*1\r\n$ 3\r\nabc\r\n", "invalid bulk length"),
        (b"*1\r\n$+3\r\nabc\r\n", "invalid bulk length"),
        (b"*1\r\n$1_0\r\nabcdefghij\r\n", "invalid bulk length"),
        (b"*1\r\n$\r\n\r\n", "invalid bulk length"),
        (b"*99999999\r\n", "invalid multibulk length"),
        (b"x" * 70_000, "too big inline request"),
        (b"*1\r\n$" + b"9" * 70_000, "too big bulk count string"),
        (b"*" + b"9" * 5000 + b"\r\n", "invalid multibulk length"),
        (b"*1\r\n$" + b"9" * 5000 + b"\r\n", "invalid bulk length"),
    ],
)
def test_malformed_requests(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        parse(data)


def test_a_bulk_longer_than_allowed_is_refused_before_it_arrives() -> None:
    parser = Parser(max_bulk=100)
    parser.feed(b"*2\r\n$3\r\nSET\r\n$101\r\n")
    with pytest.raises(ProtocolError, match="invalid bulk length: 101 bytes, at most 100"):
        list(parser)


def test_replies() -> None:
    assert encode(Simple("OK")) == b"+OK\r\n"
    assert encode(Error("ERR bad\r\nthing")) == b"-ERR bad  thing\r\n"
    assert encode(None) == b"$-1\r\n"
    assert encode(None, resp3=True) == b"_\r\n"
    assert encode(-3) == b":-3\r\n"
    assert encode([b"a", None, 1, []]) == b"*4\r\n$1\r\na\r\n$-1\r\n:1\r\n*0\r\n"
    assert encode(Map([(b"k", 1)])) == b"*2\r\n$1\r\nk\r\n:1\r\n"
    assert encode(Map([(b"k", 1)]), resp3=True) == b"%1\r\n$1\r\nk\r\n:1\r\n"


commands = st.lists(st.lists(st.binary(max_size=40), min_size=1, max_size=5), max_size=6)


@settings(max_examples=300, deadline=None)
@given(commands, st.lists(st.integers(min_value=1, max_value=50), max_size=10))
def test_any_split_of_valid_requests_parses_the_same(
    batch: list[list[bytes]], cuts: list[int]
) -> None:
    data = b"".join(request(*args) for args in batch)
    parser = Parser()
    got: list[list[bytes]] = []
    at = 0
    for cut in [*cuts, len(data)]:
        parser.feed(data[at : at + cut])
        at += cut
        got += list(parser)
    parser.feed(data[at:])
    got += list(parser)
    assert got == batch


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([b"", b"*1\r\n", b"*2\r\n$3\r\nGET\r\n"]))
def test_garbage_is_a_protocol_error_or_commands_never_a_crash(noise: bytes, head: bytes) -> None:
    parser = Parser(max_bulk=1000)
    parser.feed(head + noise)
    try:
        for command in parser:
            assert command
            assert all(isinstance(arg, bytes) for arg in command)
    except ProtocolError:
        pass
