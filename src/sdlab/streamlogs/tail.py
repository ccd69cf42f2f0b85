"""One reader per deployment, shared by all its clients.

A `Tail` is the only reader of a deployment's log while anyone watches it. When the file
grows (inotify says so) it reads the new lines once, encodes each as an SSE frame once,
and keeps the last `window` of them in memory. It never pushes to clients: each client
holds a cursor (the byte offset it has sent up to) and pulls. A client at the head waits
on the tail's `changed` event; a slow client stays behind in its own socket's
back-pressure while the tail moves on, and when it is ready again it finds its cursor
either still in the window (served from memory) or behind it (served from the file, the
*resync*). Nothing a client does can stall the reader or another client, and a client
costs a cursor and a task, not a queue of its own.

A client at the head whose connection can take bytes directly (the service's protocol
gives it a push function) need not even wake for a line: it hands the tail that function
(`wait_pushed`) and sleeps, and each new batch is written by the tail itself, in one
pass, the same bytes to every such client, as one HTTP/1.1 chunk encoded once; the
keepalives too. A client whose buffer is full refuses the push, and is sent back to its
pull loop with its cursor, where it waits on its own socket as before.

The `Hub` keeps the tails by deployment: it opens one when the first client of a
deployment arrives, closes it when the last one leaves, and turns inotify events into
reads. A slow poll backs inotify up (a missed event, a filesystem without inotify), and
a heartbeat every `keepalive` seconds lets idle clients send a keepalive comment.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from bisect import bisect_left
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

from asyncinotify import Inotify, Mask, Watch

from sdlab.streamlogs import sse
from sdlab.streamlogs.store import (
    LOG,
    MAX_LINE,
    NEWLINE,
    STATUS,
    Deployment,
    Line,
    Status,
    StreamLogsError,
    split_lines,
)

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
"""Bytes read at once, by the tail and by a client catching up from the file."""
assert READ_SIZE > MAX_LINE  # so every read holds at least one whole line

BATCH = 256
"""Most events handed to a client at once (one write to its socket)."""

KEEPALIVE = sse.comment("keepalive")
"""What a client that sent nothing for a whole heartbeat sends at the next."""

Push = Callable[[bytes], bool]
"""Write one HTTP/1.1 chunk, whole, to a client's connection now; False (nothing
written) if it cannot take it: its buffer is full, or it has gone."""


def chunk(data: bytes) -> bytes:
    """`data` as one chunk of a chunked HTTP/1.1 response (how a stream's body goes)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class _Pushed:
    """A client at the head that the tail writes to (`Tail.wait_pushed`)."""

    __slots__ = ("cursor", "done", "push", "silent")

    def __init__(self, push: Push, cursor: int, silent: bool) -> None:
        self.push = push
        self.cursor = cursor
        self.silent = silent
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class Tail:
    """A deployment's log as it grows: read once, encoded once, shared by every client."""

    def __init__(self, deployment: Deployment, *, window: int = 1024) -> None:
        if window < 1:
            raise ValueError("window must hold at least one event")
        self.deployment = deployment
        self.window = window
        self.status = deployment.status()
        self._fd = os.open(deployment.log_path, os.O_RDONLY)
        size = os.fstat(self._fd).st_size
        self.position = size if self.status.done else _last_line_end(self._fd, size)
        """Offset just past the last complete line read: the head of the stream."""
        self.start = self.position
        """Offset where the first event held in memory begins."""
        self._continues = False  # `position` cuts a long line: the next event continues it
        self._ends: list[int] = []  # the id (end offset) of each event in the window
        self._frames: list[bytes] = []  # its SSE frame
        self._changed = asyncio.Event()
        self._pushed: dict[_Pushed, None] = {}  # clients at the head, written to by the tail
        self._scheduled = False
        self._check_status = False
        self.ended: Status | None = self.status if self.status.done else None
        """The final status, once every line has been read."""
        self.closed = False
        """Set when the hub shuts down or the deployment vanished: clients stop."""
        self.beats = 0
        """Heartbeats so far: clients that sent nothing since the last one send a comment."""
        self.clients = 0
        self.lines_read = 0
        self.resyncs = 0
        """Reads from the file for clients behind the window."""

    def __repr__(self) -> str:
        return f"Tail({self.deployment.id!r}, position={self.position}, clients={self.clients})"

    # -- the reader ------------------------------------------------------------------

    def poke(self, *, status: bool = False) -> None:
        """The log (or, with `status`, the status file) may have changed: read it soon.
        Pokes within one turn of the event loop make one read."""
        self._check_status |= status
        if not self._scheduled and not self.closed:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._read)

    def _read(self) -> None:
        self._scheduled = False
        if self.closed or self.ended:
            return
        try:
            if self._check_status:
                self._check_status = False
                self.status = self.deployment.status()
            # The file was just written: it is in the page cache, and a read is a few
            # microseconds, less than a hop to a thread would cost.
            data = os.pread(self._fd, READ_SIZE, self.position)
        except (OSError, StreamLogsError) as exc:
            log.warning("deployment %s: stopped following its log: %s", self.deployment.id, exc)
            self.close()
            return
        more = len(data) == READ_SIZE
        # The writer appends every line before it marks the deployment ended, so the
        # status says "ended" only once the log is whole.
        final = self.status.done and not more
        # A window at most: the clients at the head send these before the next read
        # (they were woken first), so a burst does not push their cursors out of the
        # window and send each of them to the file.
        lines = split_lines(
            data, self.position, final=final, most=self.window, continues=self._continues
        )
        if len(lines) == self.window and lines[-1].end < self.position + len(data):
            more, final = True, False
        if lines:
            self._continues = data[lines[-1].end - self.position - 1] != NEWLINE
            self._publish(lines)
        if more:
            self.poke()  # the rest on the next turn: other tasks run in between
        elif final:
            self.ended = self.status
            self._unpush()
            self._wake()

    def _publish(self, lines: list[Line]) -> None:
        head = len(self._frames)
        for line in lines:
            self._ends.append(line.end)
            self._frames.append(frame(line))
        was, self.position = self.position, lines[-1].end
        if self._pushed:  # one encoding, one pass, before any pulling client wakes
            self._push_all(chunk(b"".join(self._frames[head:])), was)
        self.lines_read += len(lines)
        if len(self._ends) > 2 * self.window:  # trim in bulk, not on every line
            cut = len(self._ends) - self.window
            self.start = self._ends[cut - 1]
            del self._ends[:cut], self._frames[:cut]
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _push_all(self, data: bytes, was: int) -> None:
        """Write `data` to every pushed client (all at `was`, the head before it); a
        client that refuses goes back to pulling from `was`."""
        refused = []
        for client in self._pushed:
            try:
                pushed = client.push(data)
            except Exception:  # as a refusal: the client pulls the batch itself
                log.exception("deployment %s: a push failed", self.deployment.id)
                pushed = False
            if pushed:
                client.silent = False
            else:
                refused.append(client)
        for client in refused:
            self._unpush_one(client, was)

    def _unpush(self) -> None:
        for client in list(self._pushed):
            self._unpush_one(client, self.position)

    def _unpush_one(self, client: _Pushed, cursor: int) -> None:
        del self._pushed[client]
        client.cursor = cursor
        if not client.done.done():
            client.done.set_result(None)

    def beat(self) -> None:
        """A heartbeat: wake every client, so that the idle ones send a keepalive (the
        tail sends the pushed clients' itself)."""
        self.beats += 1
        refused = []
        for client in self._pushed:
            if client.silent and not client.push(_KEEPALIVE_CHUNK):
                refused.append(client)
            client.silent = True
        for client in refused:
            self._unpush_one(client, self.position)
        self._wake()

    def close(self) -> None:
        """Stop reading and tell every client to stop (the hub closes the file)."""
        self.closed = True
        self._unpush()
        self._wake()

    def release(self) -> None:
        """Close the file: the last client has gone."""
        self.closed = True
        with suppress(OSError):
            os.close(self._fd)

    # -- what clients call -------------------------------------------------------------

    def frames_after(self, cursor: int) -> tuple[bytes, int] | None:
        """The frames of the events after `cursor` (up to BATCH) and the cursor after
        them, from memory; None if the window does not hold `cursor` (the client fell
        behind it, or `cursor` is no event's id)."""
        if cursor >= self.position:
            return b"", cursor
        if cursor == self.start:
            first = 0
        else:
            found = bisect_left(self._ends, cursor)
            if found == len(self._ends) or self._ends[found] != cursor:
                return None
            first = found + 1
        last = min(first + BATCH, len(self._ends))
        return b"".join(self._frames[first:last]), self._ends[last - 1]

    async def frames_from_file(self, cursor: int) -> tuple[bytes, int]:
        """The frames after `cursor` read from the file, for a client behind the window."""
        end = min(self.position, cursor + READ_SIZE)
        # `position` is always the end of a line, so a read up to it is whole lines. The
        # byte before `cursor` says whether the client stopped inside a long line.
        before = min(cursor, 1)
        data = await asyncio.to_thread(os.pread, self._fd, end - cursor + before, cursor - before)
        continues = before == 1 and data[0] != NEWLINE
        lines = split_lines(data[before:], cursor, final=end == self.position, continues=continues)
        self.resyncs += 1
        if not lines:
            return b"", cursor
        return b"".join(frame(line) for line in lines), lines[-1].end

    async def wait(self, cursor: int) -> None:
        """Return when the log has grown past `cursor`, the deployment ended, the tail
        closed, or a heartbeat came. (Await it directly: wrapped in a task, its check
        and its wait would no longer happen in one step, and a wake-up could fall
        between them.)"""
        beats = self.beats
        while (
            self.position <= cursor
            and self.ended is None
            and not self.closed
            and self.beats == beats
        ):
            await self._changed.wait()

    async def wait_pushed(self, cursor: int, push: Push, silent: bool) -> tuple[int, bool]:
        """For a client at the head (`cursor` is the tail's position): sleep while the
        tail writes each new batch, and each keepalive, to the client with `push`; return
        when a push is refused, the deployment ended or the tail closed, with the
        client's cursor and whether it has sent nothing since the last heartbeat
        (`silent`, as it came in). At once if `cursor` is not the head. Like `wait`,
        await it directly."""
        if cursor != self.position or self.ended is not None or self.closed:
            return cursor, silent
        client = _Pushed(push, cursor, silent)
        self._pushed[client] = None
        try:
            await client.done
        finally:
            if client in self._pushed:  # cancelled: the client has gone
                del self._pushed[client]
        return client.cursor, client.silent

    def end_frame(self) -> bytes:
        """The `end` event: the deployment ended; its id is the log's final offset."""
        assert self.ended is not None
        end = {"state": self.ended.state, "ended": self.ended.ended}
        if self.ended.reason is not None:
            end["reason"] = self.ended.reason
        data = json.dumps(end)
        return sse.event(data, id=self.position, event="end")

    def stats(self) -> dict[str, Any]:
        return {
            "clients": self.clients,
            "pushed": len(self._pushed),
            "position": self.position,
            "window": len(self._ends),
            "lines read": self.lines_read,
            "resyncs": self.resyncs,
            "ended": self.ended is not None,
        }


class Hub:
    """The tails of every deployment being watched in this process."""

    def __init__(
        self, *, window: int = 1024, keepalive: float = 15.0, poll_interval: float = 1.0
    ) -> None:
        self.window = window
        self.keepalive = keepalive
        self.poll_interval = poll_interval
        self._tails: dict[str, Tail] = {}
        self._watches: dict[str, Watch] = {}
        self._inotify: Inotify | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.closing = False
        self._gone = {"lines read": 0, "resyncs": 0}  # totals of the tails closed so far

    async def start(self) -> None:
        try:
            self._inotify = Inotify()
        except OSError as exc:  # e.g. fs.inotify.max_user_instances reached
            log.warning("no inotify (%s): polling logs every 50 ms instead", exc)
            self.poll_interval = min(self.poll_interval, 0.05)
        else:
            self._tasks.append(asyncio.create_task(self._watch(self._inotify)))
        self._tasks.append(asyncio.create_task(self._poll()))
        self._tasks.append(asyncio.create_task(self._heartbeat()))

    def end_streams(self) -> None:
        """Tell every client to finish its response now (the server is shutting down;
        browsers will reconnect, with their Last-Event-ID, to the next server)."""
        self.closing = True
        for tail in self._tails.values():
            tail.close()

    async def close(self) -> None:
        self.end_streams()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None

    @asynccontextmanager
    async def follow(self, deployment: Deployment) -> AsyncIterator[Tail]:
        """The tail of `deployment`, opened by its first client, closed after its last."""
        tail = self._tails.get(deployment.id)
        if tail is None:
            tail = Tail(deployment, window=self.window)
            if self.closing:
                tail.close()
            elif self._inotify is not None:
                mask = Mask.MODIFY | Mask.MOVED_TO | Mask.CLOSE_WRITE | Mask.DELETE_SELF
                try:
                    self._watches[deployment.id] = self._inotify.add_watch(deployment.path, mask)
                except BaseException:  # e.g. the inotify watch limit: leave nothing open
                    tail.release()
                    raise
            self._tails[deployment.id] = tail  # only once there is nothing left to fail
            tail.poke(status=True)  # whatever happened between the status read and the watch
        tail.clients += 1
        try:
            yield tail
        finally:
            tail.clients -= 1
            if tail.clients == 0:
                del self._tails[deployment.id]
                watch = self._watches.pop(deployment.id, None)
                if watch is not None and self._inotify is not None:
                    with suppress(OSError):  # the folder may be gone
                        self._inotify.rm_watch(watch)
                tail.release()
                self._gone["lines read"] += tail.lines_read
                self._gone["resyncs"] += tail.resyncs

    def stats(self) -> dict[str, Any]:
        """Tails open now, with their clients, and totals since the start (also served
        as GET /api/stats)."""
        tails = self._tails.values()
        return {
            "tails": {key: tail.stats() for key, tail in self._tails.items()},
            "clients": sum(tail.clients for tail in tails),
            "lines read": self._gone["lines read"] + sum(tail.lines_read for tail in tails),
            "resyncs": self._gone["resyncs"] + sum(tail.resyncs for tail in tails),
            "inotify": self._inotify is not None,
        }

    async def _watch(self, inotify: Inotify) -> None:
        async for event in inotify:
            if event.watch is None or event.watch.path is None:
                continue
            tail = self._tails.get(event.watch.path.name)
            if tail is None:
                continue
            if Mask.DELETE_SELF in event.mask:
                tail.close()
            elif event.name is not None and event.name.name in (LOG, STATUS):
                tail.poke(status=event.name.name == STATUS)

    async def _heartbeat(self) -> None:
        # One timer for every client, rather than a timer per client re-armed per line.
        while True:
            await asyncio.sleep(self.keepalive)
            for tail in list(self._tails.values()):
                tail.beat()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            for tail in list(self._tails.values()):
                tail.poke(status=True)


_KEEPALIVE_CHUNK = chunk(KEEPALIVE)


def frame(line: Line) -> bytes:
    """The SSE frame of one line: a message, or `event: more` for a piece that goes on
    the line of the event before (a line longer than MAX_LINE)."""
    return sse.event(line.text, id=line.end, event="more" if line.continues else None)


def _last_line_end(fd: int, size: int) -> int:
    """The offset just past the last "\\n" in the first `size` bytes of the file (0 if
    none): where a tail of a running deployment starts, so it never begins mid-line."""
    end = size
    while end > 0:
        start = max(0, end - READ_SIZE)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0
