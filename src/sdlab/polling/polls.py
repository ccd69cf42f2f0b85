"""The polling endpoints as a bare ASGI app: the service's hot path.

    GET /short/status/{server_id}
    GET /long/status/{server_id}?since=V&timeout=S
    GET /long/servers?since=V&timeout=S

Polls are most of the service's requests: K short pollers send K/I requests a second,
and every change answers each of K long pollers, who all poll again at once. The same
endpoint and answer served 4,600 to 8,100 requests/s as a FastAPI route and 32,000 to
34,000 as a bare ASGI app in uvicorn (wrk, 20 connections, on this 2-core machine, in
several runs): FastAPI's routing, dependency solving and middleware cost 100 to 200 us
a request. So polls are answered before FastAPI sees the request, short and long alike
(the experiment compares the two on equal terms), and everything else goes on to
FastAPI. Parameters are checked with the same pydantic constraints FastAPI would apply,
and errors have FastAPI's shape (422 with a `detail` list). HEAD is answered as GET
without the body; other methods get 405 with `Allow: GET, HEAD`.

A waiting request also watches for its client hanging up (uvicorn's `receive()` says
`http.disconnect`), so an abandoned waiter leaves at once rather than at its timeout.

The plainest and most numerous of them, `GET /long/status/{id}?since=V&timeout=S` on a
keep-alive connection, are answered a step earlier still when the service runs in
uvicorn: inside its HTTP protocol (`service.PollProtocol`), parked on the fleet without
a task, with no ASGI scope or messages. This module holds the two pieces of that path
that know nothing of uvicorn: `plain_long_poll`, which reads such a request's target or
says it is not one (then it comes here), and `Answers`, the whole HTTP responses,
encoded once per change and written as they are to every waiter they answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import Annotated, Any, TypeVar
from urllib.parse import unquote_plus

from pydantic import Field, TypeAdapter, ValidationError

from sdlab.polling.fleet import CLOSING, Fleet, FleetClosed
from sdlab.polling.model import SERVER_ID, Server, UnknownServer
from sdlab.polling.store import DATABASE_ERRORS

logger = logging.getLogger("sdlab.polling")

MAX_TIMEOUT = 60.0
DEFAULT_TIMEOUT = 30.0

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
T = TypeVar("T")

SHORT_PREFIX = "/short/status/"
LONG_PREFIX = "/long/status/"
SERVERS_PATH = "/long/servers"

_SINCE: TypeAdapter[int] = TypeAdapter(Annotated[int, Field(ge=0)])
_TIMEOUT: TypeAdapter[float] = TypeAdapter(
    Annotated[float, Field(ge=0, le=MAX_TIMEOUT, allow_inf_nan=False)]
)
_SERVER_ID: TypeAdapter[str] = TypeAdapter(Annotated[str, Field(pattern=SERVER_ID.pattern)])

_JSON = (b"content-type", b"application/json")
_NO_STORE = (b"cache-control", b"no-store")
_ALLOW = (b"allow", b"GET, HEAD")


_PLAIN = re.compile(rb"/long/status/([A-Za-z0-9_.-]{1,64})(?:\?(.*))?", re.DOTALL)
_PLAIN_SINCE = re.compile(rb"[0-9]{1,18}")
_PLAIN_TIMEOUT = re.compile(rb"[0-9]{1,2}(?:\.[0-9]{0,9})?")


def plain_long_poll(target: bytes) -> tuple[str, int, float] | None:
    """(server id, since, timeout) of a request target such as
    `/long/status/server-1?since=7&timeout=30`, if it is a long poll whose every part
    is plainly valid; None for anything else (percent-escapes, other parameters, values
    out of range or spelled unusually), which `Polls` then answers, or refuses, as
    FastAPI would. So both paths give the same answer to every request they take."""
    found = _PLAIN.fullmatch(target)
    if found is None:
        return None
    since, timeout = 0, DEFAULT_TIMEOUT
    if found[2]:
        for part in found[2].split(b"&"):
            key, _, value = part.partition(b"=")
            if key == b"since" and _PLAIN_SINCE.fullmatch(value):
                since = int(value)
            elif key == b"timeout" and _PLAIN_TIMEOUT.fullmatch(value):
                timeout = float(value)
                if timeout > MAX_TIMEOUT:
                    return None
            else:
                return None
    return found[1].decode("ascii"), since, timeout


Headers = list[tuple[bytes, bytes]]


class Deadlines:
    """Timeouts for many waiters: one event-loop timer per `tick` seconds of deadline,
    shared by every waiter due within it, rather than one timer per waiter (arming and
    cancelling a loop timer per answer was a fifth of a fan-out's CPU at 5,000 waiters,
    in py-spy). A deadline fires up to `tick` late; taking a waiter back is a dict
    deletion."""

    def __init__(self, tick: float) -> None:
        self.tick = tick
        self._slots: dict[int, dict[object, Callable[[], None]]] = {}

    def add(
        self, loop: asyncio.AbstractEventLoop, delay: float, waiter: object, due: Callable[[], None]
    ) -> int:
        """Call `due()` `delay` seconds from now (to `tick`), unless `discard`ed first;
        returns the slot to discard it from."""
        slot = math.ceil((loop.time() + delay) / self.tick)
        waiters = self._slots.get(slot)
        if waiters is None:
            waiters = self._slots[slot] = {}
            loop.call_at(slot * self.tick, self._fire, slot)
        waiters[waiter] = due
        return slot

    def discard(self, slot: int, waiter: object) -> None:
        waiters = self._slots.get(slot)
        if waiters is not None:
            waiters.pop(waiter, None)

    def __len__(self) -> int:
        return sum(len(waiters) for waiters in self._slots.values())

    def _fire(self, slot: int) -> None:
        for due in self._slots.pop(slot, {}).values():
            try:
                due()
            except Exception:  # the others are due all the same
                logger.exception("a deadline's callback failed")


class Answers:
    """The whole HTTP responses to plain long polls, as `Polls` would have uvicorn send
    them (its default headers first, then ours): a server's 200 encoded once per change,
    the 304 and the 503 once, each again only when the default headers change (uvicorn
    makes a new list each second, for its `date`). A change that answers 5,000 waiters
    is one encoding and 5,000 writes of the same bytes."""

    def __init__(self) -> None:
        self._defaults: Headers | None = None
        self._common = b""
        self._ok: dict[str, tuple[int, bytes]] = {}  # by server: (version, response)
        self._fixed: dict[int, bytes] = {}  # by status

    def ok(self, server: Server, defaults: Headers) -> bytes:
        if defaults is not self._defaults:
            self._reset(defaults)
        found = self._ok.get(server.server_id)
        if found is not None and found[0] == server.version:
            return found[1]
        data = self._response(b"200 OK", server.body)
        self._ok[server.server_id] = (server.version, data)
        return data

    def not_modified(self, defaults: Headers) -> bytes:
        """304, no body (so neither Content-Length nor Content-Type)."""
        if defaults is not self._defaults:
            self._reset(defaults)
        data = self._fixed.get(304)
        if data is None:
            data = self._fixed[304] = (
                b"HTTP/1.1 304 Not Modified\r\n%scache-control: no-store\r\n\r\n" % self._common
            )
        return data

    def closing(self, defaults: Headers) -> bytes:
        """503: the fleet is closing (the server shutting down)."""
        if defaults is not self._defaults:
            self._reset(defaults)
        data = self._fixed.get(503)
        if data is None:
            detail = _detail(CLOSING)
            data = self._fixed[503] = self._response(b"503 Service Unavailable", detail)
        return data

    def _reset(self, defaults: Headers) -> None:
        self._defaults = defaults
        self._common = b"".join(b"%s: %s\r\n" % (name, value) for name, value in defaults)
        self._ok.clear()
        self._fixed.clear()

    def _response(self, status: bytes, body: bytes) -> bytes:
        head = b"HTTP/1.1 %s\r\n%s%s%d\r\n\r\n" % (status, self._common, _OK_HEADERS, len(body))
        return head + body


_OK_HEADERS = b"cache-control: no-store\r\ncontent-type: application/json\r\ncontent-length: "


class _Invalid(Exception):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors


class _Gone(Exception):
    """The client hung up while its poll waited."""


class Polls:
    """Answers the polls from `fleet`; passes every other request, and the lifespan,
    to `app`."""

    def __init__(self, app: ASGIApp, fleet: Fleet) -> None:
        self.app = app
        self.fleet = fleet
        self._lists: dict[int, bytes] = {}  # /long/servers answers at _lists_version, by since
        self._lists_version = -1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path.startswith(LONG_PREFIX):
                poll = self._long(scope, receive, path)
            elif path.startswith(SHORT_PREFIX):
                poll = self._short(path)
            elif path == SERVERS_PATH:
                poll = self._servers(scope, receive)
            else:
                return await self.app(scope, receive, send)
            method = scope["method"]
            if method == "GET" or method == "HEAD":
                return await self._answer(send, poll, head=method == "HEAD")
            poll.close()  # never started
            return await _respond(send, 405, _detail("Method Not Allowed"), [_ALLOW])
        await self.app(scope, receive, send)

    async def _short(self, path: str) -> tuple[int, bytes]:
        server_id = path[len(SHORT_PREFIX) :]  # the server has percent-decoded the path
        errors: list[dict[str, Any]] = []
        _check(_SERVER_ID, server_id, ["path", "server_id"], errors)
        if errors:
            raise _Invalid(errors)
        return 200, (await self.fleet.status(server_id)).body  # from the database

    async def _long(self, scope: Scope, receive: Receive, path: str) -> tuple[int, bytes]:
        server_id = path[len(LONG_PREFIX) :]
        since, timeout = _params(scope, server_id)
        server = self.fleet.get(server_id)
        if server is None or server.version <= since:  # else: newer already, no waiting
            server = await _unless_gone(receive, self.fleet.wait(server_id, since, timeout))
        return (304, b"") if server is None else (200, server.body)

    async def _servers(self, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        since, timeout = _params(scope, None)
        found = await _unless_gone(receive, self.fleet.wait_all(since, timeout))
        if found is None:
            return 304, b""
        version, changed = found
        if version != self._lists_version:
            self._lists, self._lists_version = {}, version
        body = self._lists.get(since)
        if body is None:  # encoded once per version and `since`, not once per waiter
            listed = {"version": version, "servers": [s.as_dict() for s in changed]}
            body = self._lists[since] = json.dumps(listed).encode()
        return 200, body

    async def _answer(
        self, send: Send, answering: Coroutine[Any, Any, tuple[int, bytes]], head: bool
    ) -> None:
        try:
            status, body = await answering
        except _Gone:
            return  # nobody to answer
        except _Invalid as exc:
            status, body = 422, json.dumps({"detail": exc.errors}).encode()
        except UnknownServer as exc:
            status, body = 404, _detail(str(exc))
        except FleetClosed as exc:
            status, body = 503, _detail(str(exc))
        except DATABASE_ERRORS as exc:
            status, body = 503, _detail(f"database unavailable: {exc}")
        if status == 304:  # no body, so no Content-Length or Content-Type
            await send({"type": "http.response.start", "status": 304, "headers": [_NO_STORE]})
            await send({"type": "http.response.body", "body": b""})
        else:
            await _respond(send, status, body, [_NO_STORE], head)


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]], head: bool = False
) -> None:
    """A JSON answer; for HEAD, its headers alone."""
    headers = [*headers, _JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


def _params(scope: Scope, server_id: str | None) -> tuple[int, float]:
    """`since` and `timeout` from the query string (and the server id checked), or
    _Invalid with every problem found, as FastAPI reports them."""
    query: dict[str, str] = {}
    raw = scope["query_string"].decode("latin-1")
    for part in raw.split("&") if raw else ():
        key, _, value = part.partition("=")
        query[unquote_plus(key)] = unquote_plus(value)
    errors: list[dict[str, Any]] = []
    if server_id is not None:
        _check(_SERVER_ID, server_id, ["path", "server_id"], errors)
    since = _check(_SINCE, query.get("since", 0), ["query", "since"], errors)
    timeout = _check(_TIMEOUT, query.get("timeout", DEFAULT_TIMEOUT), ["query", "timeout"], errors)
    if errors:
        raise _Invalid(errors)
    return since, timeout


def _check(adapter: TypeAdapter[T], value: Any, loc: list[str], errors: list[dict[str, Any]]) -> T:
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        for error in exc.errors():
            found = {"type": error["type"], "loc": loc, "msg": error["msg"], "input": value}
            if "ctx" in error:  # the constraint, e.g. {"ge": 0}
                found["ctx"] = error["ctx"]
            errors.append(found)
        return None  # type: ignore[return-value]  # unread: the caller raises on errors


async def _unless_gone(receive: Receive, waiting: Awaitable[T]) -> T:
    """Await `waiting` in this task, unless the client hangs up first (_Gone). The
    watcher is the one extra task a waiting poll costs."""
    me = asyncio.current_task()
    assert me is not None
    hung_up = False

    async def watch() -> None:
        nonlocal hung_up
        while (await receive())["type"] != "http.disconnect":
            pass
        hung_up = True
        me.cancel()

    watcher = asyncio.create_task(watch())
    try:
        return await waiting
    except asyncio.CancelledError:
        if hung_up and me.uncancel() == 0:  # our own cancel, and nobody else's
            raise _Gone from None
        raise
    finally:
        watcher.cancel()


def _detail(text: str) -> bytes:
    return json.dumps({"detail": text}).encode()
