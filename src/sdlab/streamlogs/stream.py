"""The response to `GET /logs/{id}`: one client's pull loop over a shared tail.

    retry: 1000                      once, first: how long the browser waits to reconnect

    id: 118                          one event per log line; the id is the byte offset
    data: 2026-11-25T13:50:33Z ...   just past the line

    : keepalive                      a comment when a heartbeat finds the stream silent

    id: 70000                        a line longer than 64 KiB: its first piece is a
    data: ...                        message, the others `more` events, whose data
                                     goes on the end of the line before
    id: 135536
    event: more
    data: ...

    id: 4211                         after the last line, if the deployment has ended;
    event: end                       then the response ends
    data: {"state": "finished", ...}

A client that reconnects with `Last-Event-ID: N` gets the lines after byte N: no gap, no
line twice. The loop below sends what the tail holds after its cursor, else waits; the
only place it can block is its own socket (uvicorn holds `send` while the client's
buffer is full), which is exactly where a slow client should wait. At the head, a client
whose connection offers a push function (the scope's `extensions["sdlab.push"]`, from
the service's protocol) lets the tail write to it instead (`Tail.wait_pushed`), and wakes
only when the tail hands it back.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress

from starlette.types import Receive, Scope, Send

from sdlab.streamlogs import sse
from sdlab.streamlogs.store import Deployment
from sdlab.streamlogs.tail import KEEPALIVE, Hub, Push, Tail

HEADERS = [
    (b"content-type", sse.MEDIA_TYPE.encode()),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # proxies such as nginx must not hold events back
]
PUSH = "sdlab.push"
"""The scope's extension that holds a stream's push function (`tail.Push`), if any."""


class EventStream:
    """An ASGI response streaming `deployment`'s log from byte `cursor` on."""

    def __init__(
        self,
        hub: Hub,
        deployment: Deployment,
        cursor: int = 0,
        *,
        retry_ms: int = 1000,
    ) -> None:
        self.hub = hub
        self.deployment = deployment
        self.cursor = cursor
        self.retry_ms = retry_ms

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with self.hub.follow(self.deployment) as tail:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            # uvicorn's `send` to a closed connection returns quietly: only `receive`
            # says the client left. Listening for it frees the client at once, not at
            # its next keepalive.
            push = scope.get("extensions", {}).get(PUSH)
            pump = asyncio.ensure_future(self._pump(tail, send, push))
            gone = asyncio.ensure_future(_disconnect(receive))
            try:
                await asyncio.wait((pump, gone), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (pump, gone):
                    task.cancel()
                await asyncio.gather(pump, gone, return_exceptions=True)
            if not pump.cancelled():
                pump.result()  # an error in the loop is the server's: let it surface
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _pump(self, tail: Tail, send: Send, push: Push | None) -> None:
        async def write(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        cursor = self.cursor
        await write(sse.retry(self.retry_ms))
        silent = False  # nothing sent since the last heartbeat
        while not tail.closed:  # the server is shutting down, or the log vanished
            chunk = tail.frames_after(cursor)
            if chunk is None:  # behind the window: catch up from the file
                chunk = await tail.frames_from_file(cursor)
            frames, cursor = chunk
            if frames:
                await write(frames)
                silent = False
                continue
            if tail.ended is not None:
                await write(tail.end_frame())
                return
            if push is not None and cursor == tail.position:
                cursor, silent = await tail.wait_pushed(cursor, push, silent)
                continue
            beats = tail.beats
            await tail.wait(cursor)
            if tail.beats != beats:
                if silent:
                    await write(KEEPALIVE)
                silent = True


async def _disconnect(receive: Receive) -> None:
    with suppress(Exception):
        while (await receive())["type"] != "http.disconnect":
            pass
