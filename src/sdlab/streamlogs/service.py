"""The log-streaming service over HTTP: the seed's endpoints, and a JSON API beside them.

    GET  /                          the deployments (HTML), with a "new deployment" button
    POST /deployments               start a mock deployment -> 201 {"id", "page", "stream"}
    GET  /deployments/{id}          its live log (HTML; the browser's EventSource)
    DELETE /deployments/{id}        remove an ended (or broken) one -> 204
    GET  /logs/{id}                 its log as Server-Sent Events (Last-Event-ID resumes),
                                    answered in front of FastAPI (why: StreamLogsApp);
                                    HEAD answers the same headers
    GET  /api/deployments[/{id}]    the same as JSON
    GET  /api/stats                 the tails open now, their clients, the mock runs

Errors are JSON `{"detail": ...}`: 404 for an unknown deployment, 422 for a malformed
id or parameter, 400 for a Last-Event-ID that is not an offset in the log. A stream
resumed after the end of an ended deployment is 204, which stops EventSource. While the
server shuts down a new stream ends at once, which EventSource answers by reconnecting
(a client that does not ask for text/event-stream gets 503 instead).

Bounds: at most `max_running` mock deployments at once (429 past it), logs of at most
`max_log_size` bytes (the deployment stops, failed), the newest `keep` ended deployments
kept (older ones deleted when one starts, and at start-up). Writes (POST, DELETE) from
another origin are refused with 403 (CSRF: a page elsewhere must not start deployments
with its visitors' browsers); reads may come from the `allow_origins` (CORS), so that an
EventSource on another site can follow a log.
(No `from __future__ import annotations` here: FastAPI reads the annotations at run time.)
"""

import asyncio
import logging
import re
import socket
import struct
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.templating import Jinja2Templates
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from sdlab.streamlogs import sse
from sdlab.streamlogs.mock import MockRunner, Plan
from sdlab.streamlogs.store import (
    Broken,
    BrokenDeployment,
    Deployment,
    DeploymentRunning,
    DeploymentStore,
    InvalidDeploymentId,
    UnknownDeployment,
)
from sdlab.streamlogs.stream import HEADERS, PUSH, EventStream
from sdlab.streamlogs.tail import Hub

log = logging.getLogger(__name__)
TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
EVENT_ID = re.compile(r"[0-9]{1,20}")
"""An offset in ASCII digits (str.isdigit() says yes to "²", which int() refuses)."""


LOGS = re.compile(r"/logs/([^/]+)")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PREFLIGHT = [
    (b"access-control-allow-methods", b"GET, HEAD"),
    (b"access-control-allow-headers", b"last-event-id, cache-control"),
    (b"access-control-max-age", b"600"),
]


class StreamLogsApp(FastAPI):
    """FastAPI, with `GET /logs/{id}` answered in front of it.

    A stream lasts as long as its client. Behind FastAPI, the coroutines and closures of
    its middleware and routing (60 of the ~150 objects the garbage collector tracked
    per connection) lasted as long, and every event to every client went through three
    of them: at 1,000 clients, a fifth of the CPU of a line's fan-out, and longer full
    collections (docs/streamlogs.md, "What the benchmark shows"). So the stream is a
    plain ASGI response, chosen here, and is not in the OpenAPI schema. The origin
    checks are here too, for every request: cross-origin writes refused (CSRF), CORS
    headers for the `allow_origins` (only their requests pay for the wrapped `send`)."""

    def __init__(
        self, *, retry_ms: int, allow_origins: Collection[str] = (), **options: Any
    ) -> None:
        super().__init__(**options)
        self.retry_ms = retry_ms
        self.allow_origins = frozenset(allow_origins)
        """Origins whose pages may read (EventSource, fetch) from this server."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await super().__call__(scope, receive, send)
        headers = Headers(scope=scope)
        if scope["method"] not in SAFE_METHODS and (refused := _cross_origin(scope, headers)):
            return await _error(403, refused)(scope, receive, send)
        origin = headers.get("origin")
        if origin is not None and origin in self.allow_origins:
            if scope["method"] == "OPTIONS":  # a preflight: a fetch() setting Last-Event-ID
                return await _preflight(origin)(scope, receive, send)
            send = _allowing(origin, send)
        if found := LOGS.fullmatch(scope["path"]):
            response = self.logs(
                scope["method"],
                found[1],
                headers.get("last-event-id"),
                event_source=sse.MEDIA_TYPE in headers.get("accept", ""),
            )
            await response(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)
        return None

    def logs(
        self,
        method: str,
        deployment_id: str,
        last_event_id: str | None,
        *,
        event_source: bool = True,
    ) -> ASGIApp:
        """The response to `method /logs/{deployment_id}`: the stream, or an error.
        `event_source`: the client asked for `text/event-stream` (EventSource does)."""
        if method not in ("GET", "HEAD"):
            return _error(405, "Method Not Allowed", headers={"allow": "GET, HEAD"})
        store: DeploymentStore = self.state.store
        hub: Hub = self.state.hub
        try:
            deployment = store.get(deployment_id)
            deployment.status(), deployment.size()  # whole, or broken
        except UnknownDeployment as exc:
            return _error(404, str(exc))
        except InvalidDeploymentId as exc:
            return _error(422, str(exc))
        except BrokenDeployment as exc:
            return _error(409, str(exc))
        cursor = _cursor(last_event_id, deployment)
        if cursor is None:
            return _error(
                400,
                f"Last-Event-ID {last_event_id!r:.40} is not the id of an event of this log "
                "(ids are the byte offsets where lines, or the 64 KiB pieces of longer "
                f"lines, end, up to {deployment.size()})",
            )
        if last_event_id is not None and deployment.status().done and cursor == deployment.size():
            # A reconnect after the `end` event (EventSource reconnects whenever a
            # response ends): 204 tells it to stop for good, where the `end` event
            # again would start it over every `retry` ms.
            return Response(status_code=204)
        if hub.closing and not event_source:
            return _error(503, "the server is shutting down; reconnect in a moment")
        if method == "HEAD":
            return _headers_only
        # To an EventSource, a stream asked for while the server shuts down is a 200
        # that ends at once (its tail is closed): it reconnects after that, after
        # `retry` ms, to the next server; any other status would stop it for good.
        return EventStream(hub, deployment, cursor, retry_ms=self.retry_ms)


def create_app(
    data_dir: Path | str,
    *,
    retry_ms: int = 1000,
    keepalive: float = 15.0,
    window: int = 1024,
    poll_interval: float = 1.0,
    max_running: int = 100,
    max_log_size: int = 64 * 1024 * 1024,
    keep: int = 1000,
    allow_origins: Collection[str] = (),
) -> StreamLogsApp:
    """The service over the deployments in `data_dir` (created if missing). `retry_ms`
    is the reconnection delay told to clients; a stream that sent nothing for a whole
    `keepalive` period gets a comment (so after one to two periods of silence); `window`
    is the events each tail keeps in memory. The bounds (`max_running` deployments,
    `max_log_size` bytes a log, the newest `keep` ended deployments) and the origins
    allowed to read (`allow_origins`, such as "https://ops.example.com") are in the
    module's docstring."""
    store = DeploymentStore(data_dir)
    hub = Hub(window=window, keepalive=keepalive, poll_interval=poll_interval)
    runner = MockRunner(store, max_log_size=max_log_size)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await hub.start()
        _prune(store, keep)
        runner.resume()
        try:
            yield
        finally:
            await runner.stop()
            await hub.close()

    app = StreamLogsApp(
        retry_ms=retry_ms,
        allow_origins=allow_origins,
        title="sdlab streamlogs",
        lifespan=lifespan,
    )
    app.state.store, app.state.hub, app.state.runner = store, hub, runner

    @app.exception_handler(UnknownDeployment)
    async def unknown(request: Request, exc: UnknownDeployment) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(InvalidDeploymentId)
    async def invalid(request: Request, exc: InvalidDeploymentId) -> JSONResponse:
        return _error(422, str(exc))

    @app.exception_handler(DeploymentRunning)
    async def running(request: Request, exc: DeploymentRunning) -> JSONResponse:
        return _error(409, str(exc))

    @app.exception_handler(BrokenDeployment)
    async def broken(request: Request, exc: BrokenDeployment) -> JSONResponse:
        return _error(409, str(exc))

    @app.get("/", response_class=HTMLResponse)
    async def index(request: Request) -> HTMLResponse:
        return TEMPLATES.TemplateResponse(
            request, "index.html", {"deployments": _listing(store), "plan": Plan()}
        )

    @app.post("/deployments", status_code=201)
    async def new_deployment(
        lines: Annotated[int, Query(ge=1, le=100_000, description="Lines to print.")] = 40,
        interval: Annotated[float, Query(ge=0, le=60, description="Seconds between lines.")] = 0.5,
    ) -> JSONResponse:
        if len(runner.running) >= max_running:
            return _error(
                429,
                f"deployments running: {len(runner.running)}, the most this server runs "
                "at once (--max-running); start this one when one has ended",
            )
        await asyncio.to_thread(_prune, store, keep)
        deployment = runner.start(Plan(lines, interval))
        body = {
            "id": deployment.id,
            "page": f"/deployments/{deployment.id}",
            "stream": f"/logs/{deployment.id}",
        }
        return JSONResponse(body, status_code=201, headers={"location": body["page"]})

    @app.get("/deployments/{deployment_id}", response_class=HTMLResponse)
    async def page(request: Request, deployment_id: str) -> HTMLResponse:
        deployment = store.get(deployment_id)
        try:
            status = deployment.status()
            deployment.size()
        except BrokenDeployment as exc:
            broken = {"id": deployment.id, "problem": str(exc)}
            return TEMPLATES.TemplateResponse(request, "broken.html", {"broken": broken})
        return TEMPLATES.TemplateResponse(request, "deployment.html", {"status": status})

    @app.delete("/deployments/{deployment_id}", status_code=204)
    async def delete(deployment_id: str) -> Response:
        await asyncio.to_thread(store.delete, deployment_id)
        return Response(status_code=204)

    @app.get("/api/deployments")
    async def api_list() -> list[dict[str, Any]]:
        return _listing(store)

    @app.get("/api/deployments/{deployment_id}")
    async def api_one(deployment_id: str) -> dict[str, Any]:
        deployment = store.get(deployment_id)
        try:
            return {**deployment.status().as_dict(), "size": deployment.size()}
        except BrokenDeployment as exc:
            return Broken(deployment.id, str(exc)).as_dict()

    @app.get("/api/stats")
    async def stats() -> dict[str, Any]:
        return {**hub.stats(), "running": runner.running}

    return app


def _listing(store: DeploymentStore) -> list[dict[str, Any]]:
    """The deployments, newest first, then the broken folders (`{"id", "state":
    "broken", "problem"}`)."""
    found = store.scan()
    whole = [{**status.as_dict(), "size": size} for status, size in found.deployments]
    return whole + [broken.as_dict() for broken in found.broken]


def _prune(store: DeploymentStore, keep: int) -> None:
    if gone := store.prune(keep):
        log.info("deleted %d ended deployments, the oldest beyond the newest %d", len(gone), keep)


def _cross_origin(scope: Scope, headers: Headers) -> str | None:
    """Why a write (POST, DELETE) must be refused, if it comes from a page of another
    origin; None if it comes from one of ours, or from no browser (curl sends neither
    header). A browser's Sec-Fetch-Site is the answer when there is one (no page can
    forge it, and it holds behind a TLS proxy, where our scheme is not the page's);
    older browsers send only Origin, compared with this server's own."""
    method = scope["method"]
    site = headers.get("sec-fetch-site")
    if site in ("same-origin", "none"):
        return None
    if site is not None:
        return (
            f"cross-origin {method} refused (Sec-Fetch-Site: {site!r:.40}): "
            "only this server's own pages may write"
        )
    origin = headers.get("origin")
    ours = f"{scope['scheme']}://{headers.get('host', '')}"
    if origin is not None and origin != ours:
        return (
            f"cross-origin {method} refused: Origin {origin!r:.80} is not {ours!r:.80}; "
            "only this server's own pages may write"
        )
    return None


def _allowing(origin: str, send: Send) -> Send:
    """`send`, adding the CORS headers that let a page of `origin` read the response."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            cors = [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"vary", b"origin"),
            ]
            message = {**message, "headers": [*message.get("headers", ()), *cors]}
        await send(message)

    return sending


def _preflight(origin: str) -> ASGIApp:
    headers = {name.decode(): value.decode() for name, value in PREFLIGHT}
    return Response(
        status_code=204,
        headers={**headers, "access-control-allow-origin": origin, "vary": "origin"},
    )


async def _headers_only(scope: Scope, receive: Receive, send: Send) -> None:
    """`HEAD /logs/{id}`: the stream's status and headers, no body."""
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _cursor(last_event_id: str | None, deployment: Deployment) -> int | None:
    """Where a stream starts: after the event the client last saw, or at the top; None
    if `last_event_id` cannot be an id of this log."""
    if last_event_id is None or not last_event_id.strip():
        return 0
    value = last_event_id.strip()
    if EVENT_ID.fullmatch(value) and deployment.is_event_id(int(value)):
        return int(value)
    return None


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


class StallGuard(AutoHTTPProtocol):  # type: ignore[misc,valid-type]  # chosen at import
    """uvicorn's HTTP protocol, cutting a client that has stopped reading.

    A stream only writes; a client that reads nothing more (a frozen tab, a suspended
    `curl`) fills its socket's kernel buffer (up to 4 MiB here) and then uvicorn's
    (64 KiB), and holds both for as long as it stays connected: TCP never gives up on
    a peer that answers its probes. When the write buffer has stayed full (the
    transport paused writing and has not resumed) for `send_timeout` seconds, the
    connection is reset, which frees the kernel's buffer at once too. Nothing is lost:
    EventSource reconnects with its Last-Event-ID and resumes where it stopped. (nginx's
    `send_timeout` is the same rule; idle streams are never cut: they hold no data.)
    """

    send_timeout = 30.0
    _stalled: asyncio.TimerHandle | None = None

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        # A stream's push function (`tail.Push`): the tail writes a line's chunk straight
        # to the transport, the same bytes to every client at the head, instead of
        # waking each client's task to hand it to `send`. It leans on uvicorn's httptools
        # cycle (its fields below); tests/streamlogs/test_push.py holds them.
        cycle = self.cycle
        if (
            isinstance(self, HttpToolsProtocol)
            and cycle is not None
            and cycle.scope is self.scope
            and self.scope["path"].startswith("/logs/")
        ):
            self.scope.setdefault("extensions", {})[PUSH] = partial(self._push, cycle)

    def _push(self, cycle: RequestResponseCycle, data: bytes) -> bool:
        """Write one chunk of `cycle`'s streaming response now, if it can take it."""
        if (
            not cycle.response_started
            or cycle.response_complete
            or cycle.disconnected
            or cycle.chunked_encoding is not True
            or self.flow.write_paused
            or self.transport.is_closing()
        ):
            return False
        self.transport.write(data)
        return True

    def pause_writing(self) -> None:
        super().pause_writing()
        self._stalled = self.loop.call_later(self.send_timeout, self._cut)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._unstall()

    def connection_lost(self, exc: Exception | None) -> None:
        self._unstall()
        super().connection_lost(exc)

    def _unstall(self) -> None:
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None

    def _cut(self) -> None:
        self._stalled = None
        log.info("cutting %s: it read nothing for %s s", self.client, self.send_timeout)
        with suppress(OSError, AttributeError):  # a reset, not a close that waits to flush
            sock = self.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()


class Server(uvicorn.Server):
    """uvicorn, ending every open stream when it shuts down. Left alone, uvicorn waits
    for responses to finish, and a log stream finishes only with its deployment.
    `on_start` is called once the server listens."""

    on_start: Callable[[], None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.on_start is not None:
            self.on_start()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        app = self.config.app
        if isinstance(app, StreamLogsApp):  # not the seed's app (`serve --seed`)
            app.state.hub.end_streams()
        await super().shutdown(sockets)


def server(
    app: FastAPI,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    send_timeout: float = 30.0,
    **options: Any,
) -> Server:
    """A uvicorn server for `app` (run it with `server.run()` or `await server.serve()`).
    A client that takes nothing from a full send buffer for `send_timeout` seconds is
    cut (see `StallGuard`); `options` go to `uvicorn.Config`."""
    options.setdefault("log_level", "warning")
    options.setdefault("timeout_graceful_shutdown", 5)
    guard = type("StallGuard", (StallGuard,), {"send_timeout": send_timeout})
    return Server(uvicorn.Config(app, host=host, port=port, http=guard, **options))
