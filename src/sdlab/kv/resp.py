"""The Redis protocol, RESP2 (and the little of RESP3 that redis-py 8 asks for): an
incremental parser for requests and an encoder for replies. No I/O here: the server
feeds the parser whatever bytes arrive.

A request is an array of bulk strings (`*2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\n`), or an
inline command (`GET k\\r\\n`, as typed into telnet). Anything else is a ProtocolError,
which the server answers with `-ERR Protocol error: ...` before it closes the
connection, as Redis does. Lengths are checked before anything is buffered for them, so
a peer cannot make the server hold more than `max_bulk` bytes for one argument.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

MAX_BULK = 512 * 1024 * 1024  # Redis's proto-max-bulk-len
MAX_ARGS = 1024 * 1024
MAX_INLINE = 64 * 1024  # an inline command, or a length line, longer than this is refused

_INTEGER = re.compile(rb"-?[0-9]{1,18}")  # more is too long anyway (and int() fails past 4,300)


class ProtocolError(Exception):
    """Bytes that are not a RESP request."""


class Parser:
    """Feed bytes in, iterate complete commands out (each a list of bytes)."""

    def __init__(self, *, max_bulk: int = MAX_BULK, max_args: int = MAX_ARGS) -> None:
        self.max_bulk = max_bulk
        self.max_args = max_args
        self._buf = bytearray()
        self._pos = 0
        self._args: list[bytes] | None = None  # a multibulk request, as far as it came
        self._missing = 0  # and how many of its arguments are still to come

    def feed(self, data: bytes) -> None:
        self._buf += data

    def __iter__(self) -> Iterator[list[bytes]]:
        while (command := self._next()) is not None:
            yield command

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def _next(self) -> list[bytes] | None:
        """The next complete command, or None (and nothing consumed) if more bytes are
        needed."""
        while True:
            if self._pos >= len(self._buf):
                self._buf.clear()
                self._pos = 0
                return None
            if self._pos > 65536:  # drop what was consumed, now and then
                del self._buf[: self._pos]
                self._pos = 0
            multibulk = self._args is not None or self._buf[self._pos] == ord("*")
            command = self._multibulk() if multibulk else self._inline()
            if command is None:
                return None
            if command:  # an empty array or a blank line is no command: skip it
                return command

    def _line(self, start: int, what: str) -> int | None:
        """Where the CRLF that ends the line at `start` is (None: not arrived yet)."""
        end = self._buf.find(b"\r\n", start, start + MAX_INLINE + 2)
        if end < 0:
            if len(self._buf) - start > MAX_INLINE:
                raise ProtocolError(f"too big {what}")
            return None
        return end

    def _number(self, start: int, end: int, what: str) -> int:
        digits = bytes(self._buf[start:end])
        if digits.isdigit() and len(digits) <= 18:  # the usual case, without the regex
            return int(digits)
        if not _INTEGER.fullmatch(digits):
            raise ProtocolError(f"invalid {what}")
        return int(digits)

    def _multibulk(self) -> list[bytes] | None:
        """A request's arguments are taken as each arrives whole, so that a long request
        arriving in many reads is parsed once, not again from its start with each read."""
        buf = self._buf
        if self._args is None:
            end = self._line(self._pos, "mbulk count string")
            if end is None:
                return None
            count = self._number(self._pos + 1, end, "multibulk length")
            if count > self.max_args:
                raise ProtocolError("invalid multibulk length")
            self._args, self._missing = [], max(count, 0)
            self._pos = end + 2
        while self._missing:
            at = self._pos
            if at >= len(buf):
                return None
            if buf[at] != ord("$"):
                raise ProtocolError(f"expected '$', got {chr(buf[at])!r}")
            end = self._line(at, "bulk count string")
            if end is None:
                return None
            size = self._number(at + 1, end, "bulk length")
            if size < 0:
                raise ProtocolError("invalid bulk length")
            if size > self.max_bulk:
                raise ProtocolError(f"invalid bulk length: {size} bytes, at most {self.max_bulk}")
            start = end + 2
            if len(buf) < start + size + 2:
                return None
            if buf[start + size : start + size + 2] != b"\r\n":
                raise ProtocolError("expected CRLF after a bulk string")
            self._args.append(bytes(buf[start : start + size]))
            self._missing -= 1
            self._pos = start + size + 2
        args, self._args = self._args, None
        return args

    def _inline(self) -> list[bytes] | None:
        end = self._buf.find(b"\n", self._pos, self._pos + MAX_INLINE + 1)
        if end < 0:
            if len(self._buf) - self._pos > MAX_INLINE:
                raise ProtocolError("too big inline request")
            return None
        line = bytes(self._buf[self._pos : end])
        self._pos = end + 1
        return line.split()  # whitespace-separated words (no quoting, unlike Redis)


@dataclass(frozen=True, slots=True)
class Simple:
    """A simple string reply: `+OK`."""

    text: str


@dataclass(frozen=True, slots=True)
class Error:
    """An error reply: `-ERR ...` (the text starts with its code: ERR, NOPROTO...)."""

    text: str


@dataclass(frozen=True, slots=True)
class Map:
    """A map reply (HELLO, CONFIG GET): a map in RESP3, a flat array in RESP2."""

    pairs: Sequence[tuple[Reply, Reply]]


class NullArray:
    """The null array, `*-1` (RESP3's null): what EXEC answers when a watched key changed."""


OK = Simple("OK")
QUEUED = Simple("QUEUED")
NULL_ARRAY = NullArray()
Reply = Simple | Error | Map | NullArray | int | bytes | str | None | Sequence["Reply"]


def encode(reply: Reply, resp3: bool = False) -> bytes:
    """The bytes of a reply: bytes and str are bulk strings, None the null, int an
    integer, a list or tuple an array. RESP2 unless the client asked for RESP3 (HELLO 3),
    where only the null and maps differ for the replies this server gives."""
    if isinstance(reply, bytes):
        return b"$%d\r\n%b\r\n" % (len(reply), reply)
    if isinstance(reply, Simple):
        return b"+%b\r\n" % _one_line(reply.text)
    if isinstance(reply, Error):
        return b"-%b\r\n" % _one_line(reply.text)
    if reply is None:
        return b"_\r\n" if resp3 else b"$-1\r\n"
    if isinstance(reply, NullArray):
        return b"_\r\n" if resp3 else b"*-1\r\n"
    if isinstance(reply, bool | int):
        return b":%d\r\n" % reply
    if isinstance(reply, str):
        return encode(reply.encode())
    if isinstance(reply, Map):
        if resp3:
            items = b"".join(encode(k, resp3) + encode(v, resp3) for k, v in reply.pairs)
            return b"%%%d\r\n%b" % (len(reply.pairs), items)
        return encode([item for pair in reply.pairs for item in pair])
    return b"*%d\r\n" % len(reply) + b"".join(encode(item, resp3) for item in reply)


def _one_line(text: str) -> bytes:
    return text.replace("\r", " ").replace("\n", " ").encode()


def request(*args: bytes | str | int) -> bytes:
    """A command as a client sends it (for tests and tools)."""
    raw = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    return b"*%d\r\n" % len(raw) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in raw)
