"""The mock EC2 status service over HTTP.

    GET  /                                     the page: every server, live by long polling
    GET  /servers                              {"version", "servers": [...]} from the database
    POST /create/{server_id}                   202: TO_DO now, IN_PROGRESS and DONE later
    POST /terminate/{server_id}                DONE -> NOT_YET_CREATED
    GET  /short/status/{server_id}             the server, read from the database now
    GET  /long/status/{server_id}?since=V&timeout=S
                                               200 with the server once its version > V;
                                               304 if S seconds pass first
    GET  /long/servers?since=V&timeout=S       200 {"version", "servers": changed after V}; 304
    GET  /stats                                this process: waiters, version, channel, CPU

A server is `{"server_id", "status", "version", "changed_at"}`. Errors are JSON with a
`detail`: 404 unknown server, 409 create while a creation is under way (or done), 422 a
bad `since`, `timeout` or server id, 503 database unavailable or server shutting down.
The polls are answered by `polls.Polls` in front of FastAPI (why: there), and plain long
polls inside uvicorn's HTTP protocol, before either (`PollProtocol`).
(No `from __future__ import annotations` here: FastAPI reads the annotations at run time.)
"""

import json
import re
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib.resources import files
from typing import Annotated, Any, cast

import port_for
from fastapi import FastAPI, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, Response
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from sdlab.infra.process import ServerProcess, sdlab_command
from sdlab.polling.fleet import Fleet, FleetClosed, NotMirrored
from sdlab.polling.model import SERVER_ID, Conflict, Delays, Server, UnknownServer
from sdlab.polling.polls import Answers, Deadlines, Polls, plain_long_poll
from sdlab.polling.store import DATABASE_ERRORS, DEFAULT_TABLE

PAGE = files("sdlab.polling").joinpath("page.html").read_text()
NO_STORE = {"Cache-Control": "no-store"}

ServerId = Annotated[
    str, PathParam(pattern=SERVER_ID.pattern, description="Letters, digits, `_.-`; 1 to 64.")
]


class PollingApp(Polls):
    """The service: the polls, then FastAPI (`api`) for the rest."""

    def __init__(self, api: FastAPI, fleet: Fleet) -> None:
        super().__init__(api, fleet)
        self.api = api

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """Start-up and shutdown, for running the app without a server (tests)."""
        # FastAPI's lifespan may yield a state mapping; ours yields nothing.
        return cast(AbstractAsyncContextManager[None], self.api.router.lifespan_context(self.api))


def create_app(fleet: Fleet, seed: Sequence[str] = ()) -> PollingApp:
    """The app around a fleet opened in the server's event loop. At start-up the app
    starts the fleet (unless it already runs) and adds the `seed` servers that are
    missing; at shutdown it closes the fleet."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            if not fleet.started:
                await fleet.start()
            await fleet.add(seed)
            app.state.fleet = fleet
            yield
        finally:
            await fleet.close()

    app = FastAPI(title="sdlab polling: mock EC2 status", lifespan=lifespan)

    def fleet_of(request: Request) -> Fleet:
        return request.app.state.fleet

    @app.exception_handler(UnknownServer)
    async def unknown(request: Request, exc: UnknownServer) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(Conflict)
    async def conflict(request: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse(
            status_code=409, content={"detail": str(exc), "server": exc.server.as_dict()}
        )

    @app.exception_handler(FleetClosed)
    async def closing(request: Request, exc: FleetClosed) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": str(exc)})

    async def database_away(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": f"database unavailable: {exc}"})

    for error in DATABASE_ERRORS:
        app.add_exception_handler(error, database_away)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE)

    @app.get("/servers")
    async def servers(request: Request) -> Response:
        found = await fleet_of(request).store.all()
        version = max((s.version for s in found), default=0)
        return _json({"version": version, "servers": [s.as_dict() for s in found]})

    @app.post("/create/{server_id}", status_code=202)
    async def create(request: Request, server_id: ServerId) -> Response:
        server = await fleet_of(request).create(server_id)
        return Response(server.body, status_code=202, media_type="application/json")

    @app.post("/terminate/{server_id}")
    async def terminate(request: Request, server_id: ServerId) -> Response:
        return _server(await fleet_of(request).terminate(server_id))

    @app.get("/stats")
    async def stats(request: Request) -> dict[str, Any]:
        return {**fleet_of(request).stats(), "cpu (s)": time.process_time()}

    return PollingApp(app, fleet)


def _server(server: Server) -> Response:
    return Response(server.body, media_type="application/json", headers=NO_STORE)


def _json(content: Any) -> Response:
    return Response(json.dumps(content), media_type="application/json", headers=NO_STORE)


class PollProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering plain long polls itself.

    At 5,000 waiters a change costs 5,000 answers and brings 5,000 polls straight back.
    Through ASGI each of them is a scope, a task, a disconnect watcher, an event to wait
    on and two `send` messages: about 100 us of CPU per answered poll, ten times the
    write itself. Here a `GET /long/status/{id}?since=V&timeout=S` that `plain_long_poll`
    reads, on a keep-alive HTTP/1.1 connection with nothing pipelined ahead of it, is
    parked on the fleet (`Fleet.park`) with a shared timer for its timeout, and the fleet's
    one pass over the server's waiters writes the same pre-encoded response (`Answers`)
    to each of their transports. Any other request, and any long poll the mirror
    cannot answer alone (an unknown server, a `since` beyond the mirror: those go to
    the database), goes the usual way, through `Polls` and FastAPI, with the scope
    uvicorn would have made; so the answers, errors and headers are the same.

    It leans on uvicorn's protocol internals (its `cycle`, `on_response_complete`, the
    server state's default headers): tests/polling/test_fast_path.py holds them, for
    uvicorn's next release. Make one per fleet with `poll_protocol(fleet)`.
    """

    fleet: Fleet
    answers: Answers
    timeouts: Deadlines
    idle: Deadlines
    poll: "PlainPoll | None" = None

    _in_message = False  # the parser is inside a request

    def data_received(self, data: bytes) -> None:
        # A re-poll arrives whole, in one segment: read it without the parser's callbacks.
        cycle = self.cycle
        if (
            data[:17] == b"GET /long/status/"
            and not self._in_message
            and (cycle is None or cycle.response_complete)
            and self.limit_concurrency is None
        ):
            found = _WHOLE_POLL.fullmatch(data)
            if found is not None and not _SPECIAL_HEADER.search(found[2]):
                self._unset_keepalive_if_required()
                if self._take(found[1]):
                    return
        super().data_received(data)

    def on_message_begin(self) -> None:
        # The scope waits until the request is known not to be a plain long poll.
        self._in_message = True
        self.url = b""
        self.headers = []
        self.expect_100_continue = False

    def on_message_complete(self) -> None:
        self._in_message = False
        super().on_message_complete()

    def on_headers_complete(self) -> None:
        if self._park_or_answer():
            return
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()  # the scope, as uvicorn makes it
        self.url, self.expect_100_continue = url, expect
        self.headers = self.scope["headers"] = headers
        super().on_headers_complete()

    def _park_or_answer(self) -> bool:
        """Take the request the parser has read if it is a plain long poll the mirror
        can answer. False: it goes the usual way."""
        parser = self.parser
        cycle = self.cycle
        if (
            parser.get_method() != b"GET"
            or (cycle is not None and not cycle.response_complete)  # pipelined behind one
            or self.expect_100_continue
            or not parser.should_keep_alive()
            or parser.should_upgrade()
            or parser.get_http_version() != "1.1"
            or self.limit_concurrency is not None
            or any(name in _BODY_HEADERS for name, _ in self.headers)
        ):
            return False
        return self._take(self.url)

    def _take(self, target: bytes) -> bool:
        """Answer a plain long poll to `target` now, or park it; False if it is none, or
        one the mirror cannot answer."""
        wanted = plain_long_poll(target)
        if wanted is None:
            return False
        server_id, since, timeout = wanted
        poll = PlainPoll(self, server_id)
        try:
            server = self.fleet.park(server_id, since, poll)
        except NotMirrored:
            return False
        self.cycle = poll  # type: ignore[assignment]  # the fields uvicorn reads
        if server is not None:  # newer already: no waiting
            self.finish(poll, self.answers.ok(server, self.server_state.default_headers))
        else:
            self.poll = poll
            poll.slot = self.timeouts.add(self.loop, timeout, poll, poll.expire)
        return True

    def finish(self, poll: "PlainPoll", response: bytes) -> None:
        """Write a plain poll's whole response, then go on as uvicorn does after one."""
        if poll.slot is not None:
            self.timeouts.discard(poll.slot, poll)
            poll.slot = None
        poll.response_complete = True
        if self.poll is poll:
            self.poll = None
        if poll.disconnected:
            return
        self.transport.write(response)
        if not poll.keep_alive:  # the server is shutting down
            self.transport.close()
        if self.pipeline or self.transport.is_closing():
            self.on_response_complete()  # uvicorn's own way: the next request, or nothing
            return
        # What on_response_complete does, with the keep-alive timeout in `idle`.
        self.server_state.total_requests += 1
        if self.flow.read_paused:
            self.flow.resume_reading()
        self._idle = self.idle.add(
            self.loop, self.timeout_keep_alive, self, self.timeout_keep_alive_handler
        )

    _idle: int | None = None  # the connection's slot in `idle`, between requests

    def _unset_keepalive_if_required(self) -> None:
        # uvicorn calls it when data arrives, before arming its own timer, and on close.
        if self._idle is not None:
            self.idle.discard(self._idle, self)
            self._idle = None
        super()._unset_keepalive_if_required()

    def connection_lost(self, exc: Exception | None) -> None:
        poll = self.poll
        if poll is not None:  # parked: its client has gone
            self.poll = None
            self.fleet.unpark(poll.server_id, poll)
            if poll.slot is not None:
                self.timeouts.discard(poll.slot, poll)
        if self._idle is not None:
            self.idle.discard(self._idle, self)
            self._idle = None
        super().connection_lost(exc)


_BODY_HEADERS = frozenset({b"content-length", b"transfer-encoding"})
# One whole GET, HTTP/1.1, its headers well-formed (what the parser would accept), and
# none of those that change how a request is read or answered.
_WHOLE_POLL = re.compile(
    rb"GET (/long/status/[!-~]*) HTTP/1\.1\r\n"
    rb"((?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e\x80-\xff]*\r\n)*)\r\n"
)
_SPECIAL_HEADER = re.compile(
    rb"(?im)^(?:content-length|transfer-encoding|expect|connection|upgrade)[ \t]*:"
)


class _NoEvent:
    """What uvicorn sets on a request's `message_event`; a plain poll reads no body."""

    def set(self) -> None:
        pass


class PlainPoll:
    """A plain long poll parked on the fleet (a `fleet.Waiter`), and, while it is one,
    the protocol's `cycle`: these are the fields of uvicorn's RequestResponseCycle that
    its protocol reads and writes."""

    __slots__ = (
        "body",
        "disconnected",
        "keep_alive",
        "more_body",
        "protocol",
        "response_complete",
        "server_id",
        "slot",
    )
    message_event = _NoEvent()

    def __init__(self, protocol: PollProtocol, server_id: str) -> None:
        self.protocol = protocol
        self.server_id = server_id
        self.slot: int | None = None  # in the protocol's `timeouts`, while parked
        self.response_complete = False
        self.keep_alive = True
        self.disconnected = False
        self.more_body = False
        self.body = b""

    def wake(self, server: Server) -> None:
        protocol = self.protocol
        protocol.finish(self, protocol.answers.ok(server, protocol.server_state.default_headers))

    def release(self) -> None:
        protocol = self.protocol
        protocol.finish(self, protocol.answers.closing(protocol.server_state.default_headers))

    def expire(self) -> None:
        self.slot = None
        protocol = self.protocol
        if protocol.fleet.unpark(self.server_id, self):
            response = protocol.answers.not_modified(protocol.server_state.default_headers)
            protocol.finish(self, response)


def poll_protocol(fleet: Fleet) -> type[PollProtocol]:
    """The protocol class to give uvicorn (`uvicorn.Config(http=...)`) for `fleet`."""
    shared = {
        "fleet": fleet,
        "answers": Answers(),
        "timeouts": Deadlines(0.01),  # a poll's `timeout`, to 10 ms
        "idle": Deadlines(1.0),  # uvicorn's keep-alive timeout, to the second
    }
    return type("PollProtocol", (PollProtocol,), shared)


class ServiceProcess(ServerProcess):
    """`sdlab polling serve` in a process of its own, on a free port: what the tests and the
    experiment run, as a user would (two of them on one database make two processes).

        with ServiceProcess(mysql_url, redis_url=redis_url, table="t1") as service:
            httpx.post(f"{service.url}/create/server-1")
            service.kill()                                 # SIGKILL: a crash

    One service process; ready once it answers HTTP. `stop()` is Ctrl-C (held polls
    are answered 503 and the process exits 130), `kill()` a crash.
    """

    def __init__(
        self,
        db_url: str,
        *,
        redis_url: str | None = None,
        channel: str = "auto",
        table: str = DEFAULT_TABLE,
        servers: int = 5,
        delays: Delays | None = None,
        sweep: float = 1.0,
        port: int | None = None,
    ) -> None:
        delays = delays or Delays()
        self.port = port or int(port_for.select_random())
        self.url = f"http://127.0.0.1:{self.port}"
        command = sdlab_command(
            "polling", "serve",
            "--port", str(self.port), "--db", db_url, "--channel", channel,
            "--table", table, "--servers", str(servers), "--sweep", str(sweep),
            "--to-do", str(delays.to_do), "--in-progress", str(delays.in_progress),
            *(["--redis", redis_url] if redis_url else []),
        )  # fmt: skip
        super().__init__(command, ready_url=f"{self.url}/stats", name="polling service")
