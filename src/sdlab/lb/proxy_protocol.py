"""The PROXY protocol (HAProxy's `send-proxy`, spec: haproxy.org/download/2.6/doc/
proxy-protocol.txt): the first bytes the proxy sends a backend say who the client is, so
the backend sees the client's address instead of the proxy's.

    header(1, ("10.0.0.7", 51000), ("10.0.0.1", 9090))
    # b"PROXY TCP4 10.0.0.7 10.0.0.1 51000 9090\\r\\n"
    header(2, ...)    # the binary form: 28 bytes for IPv4
    parse(data)       # -> (client, proxy, the bytes after it): for backends
"""

from __future__ import annotations

import ipaddress
import struct

SIGNATURE_V2 = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_PROXY = 0x21  # version 2, command PROXY
_V2_LOCAL = 0x20  # version 2, command LOCAL (the proxy's own connection, e.g. a check)
_FAMILY = {4: 0x11, 6: 0x21}  # TCP over IPv4, TCP over IPv6

Peer = tuple[str, int]


class BadHeader(ValueError):
    """Bytes that are not a PROXY protocol header."""


def header(version: int, client: Peer, proxy: Peer) -> bytes:
    """The header for a connection from `client` that arrived at `proxy` (address, port)."""
    src, dst = ipaddress.ip_address(client[0]), ipaddress.ip_address(proxy[0])
    if src.version != dst.version:  # an IPv4 client on an IPv6 socket: map it
        src, dst = _as_v6(src), _as_v6(dst)
    if version == 1:
        family = "TCP4" if src.version == 4 else "TCP6"
        return f"PROXY {family} {src} {dst} {client[1]} {proxy[1]}\r\n".encode()
    if version == 2:
        body = src.packed + dst.packed + struct.pack("!HH", client[1], proxy[1])
        return SIGNATURE_V2 + struct.pack("!BBH", _V2_PROXY, _FAMILY[src.version], len(body)) + body
    raise ValueError(f"PROXY protocol version 1 or 2, not {version}")


def _as_v6(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv6Address:
    if isinstance(address, ipaddress.IPv6Address):
        return address
    return ipaddress.IPv6Address(f"::ffff:{address}")


def parse(data: bytes) -> tuple[Peer | None, Peer | None, bytes]:
    """(client, proxy, the bytes after the header) from the start of a connection; the
    peers are None for v1's UNKNOWN and v2's LOCAL. Raises BadHeader; for a backend."""
    if data.startswith(b"PROXY "):
        line, sep, rest = data.partition(b"\r\n")
        if not sep or len(line) > 105:
            raise BadHeader("a PROXY v1 line longer than 107 bytes or unfinished")
        parts = line.decode("ascii").split(" ")
        if parts[1] == "UNKNOWN":
            return None, None, rest
        if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
            raise BadHeader(f"not a PROXY v1 line: {line!r}")
        return (parts[2], int(parts[4])), (parts[3], int(parts[5])), rest
    if data.startswith(SIGNATURE_V2):
        if len(data) < 16:
            raise BadHeader("a PROXY v2 header cut short")
        command, family, length = struct.unpack("!BBH", data[12:16])
        body, rest = data[16 : 16 + length], data[16 + length :]
        if len(body) < length:
            raise BadHeader("a PROXY v2 header cut short")
        if command == _V2_LOCAL:
            return None, None, rest
        size = {0x11: 4, 0x21: 16}.get(family)
        if command != _V2_PROXY or size is None:
            raise BadHeader(f"PROXY v2 command {command:#x} family {family:#x} not handled")
        src = str(ipaddress.ip_address(body[:size]))
        dst = str(ipaddress.ip_address(body[size : 2 * size]))
        sport, dport = struct.unpack("!HH", body[2 * size : 2 * size + 4])
        return (src, sport), (dst, dport), rest
    raise BadHeader("no PROXY protocol header")
