"""The Server-Sent Events wire format (HTML Living Standard, "Server-sent events").

A stream is UTF-8 text. An event is a block of `field: value` lines ended by a blank
line; `data:` lines are joined with "\\n" by the client; a line starting with ":" is a
comment the client ignores (a keepalive); `retry:` sets the client's reconnection delay.
The client remembers the last `id:` it saw and sends it back as `Last-Event-ID` when it
reconnects.

Frames are built as bytes once per event and shared by every client of a deployment.
"""

from __future__ import annotations

import re

MEDIA_TYPE = "text/event-stream"

# The spec ends lines at CRLF, LF or CR: a CR inside a log line (a progress bar redrawn
# in place) would end the `data:` line early, so each segment gets a `data:` line of its
# own and the client sees "\n" where the log had "\r".
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def event(data: str, *, id: int | str | None = None, event: str | None = None) -> bytes:
    """One event: `id:`, `event:` and one `data:` line per line of `data`."""
    parts = []
    if id is not None:
        parts.append(f"id: {_single_line(str(id), 'id')}\n")
    if event is not None:
        parts.append(f"event: {_single_line(event, 'event')}\n")
    parts.extend(f"data: {line}\n" for line in _LINE_BREAK.split(data))
    parts.append("\n")
    return "".join(parts).encode()


def comment(text: str = "") -> bytes:
    """A comment: ignored by clients, it keeps idle connections (and proxies) alive."""
    return (
        "".join(f":{' ' if line else ''}{line}\n" for line in _LINE_BREAK.split(text)).encode()
        + b"\n"
    )


def retry(milliseconds: int) -> bytes:
    """How long the client waits before it reconnects after losing the stream."""
    if milliseconds < 0:
        raise ValueError("retry must be >= 0 ms")
    return f"retry: {milliseconds}\n\n".encode()


def _single_line(value: str, field: str) -> str:
    if _LINE_BREAK.search(value) or "\0" in value:
        raise ValueError(f"an SSE {field} must be one line without NUL, got {value!r}")
    return value
