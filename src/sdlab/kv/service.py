"""The HTTP API, and `serve()`: one store behind both HTTP and the Redis protocol.

    GET    /keys/{key}                   the value, raw (404 if missing or expired)
    PUT    /keys/{key}?ttl=S&nx=&xx=     store the request body (413 if over the limit,
                                         412 if nx/xx is not met)
    (503 when the database fails or the store is closed)
    DELETE /keys/{key}                   204, or 404 if there was no such key
    GET    /keys?prefix=&after=&limit=   keys in byte order, and where to continue (`next`)
    GET    /stats                        the backend, writes, batches, rows swept

With a password (`create_app(store, password=...)`, `sdlab kv serve --requirepass`),
every request must carry it as a bearer token (`Authorization: Bearer <password>`), the
same secret as the Redis protocol's AUTH; without it the answer is 401.

A key is the rest of the path, slashes included: the bytes the client %-escaped, any
bytes (`/keys/%FF` is the one-byte key 0xFF, as over RESP); one that is too long is a
422. Values are bytes both ways (`application/octet-stream`); the time to live of a value
comes back in the `X-TTL` header (seconds, -1 for none). Every error is JSON with a
`detail`. (No `from __future__ import annotations`: FastAPI reads them at run time.)
"""

import asyncio
import contextlib
import hmac
import ipaddress
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any
from urllib.parse import quote_from_bytes, unquote_to_bytes

import port_for
import uvicorn
from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse

from sdlab.infra.process import ServerProcess as _ServerProcess
from sdlab.infra.process import sdlab_command
from sdlab.kv.core import InvalidKey, InvalidTTL, KVError, StoreClosed, ValueTooLarge, as_key
from sdlab.kv.server import RespServer
from sdlab.kv.store import BackendUnavailable, Store

MAX_SCAN = 10_000
KEYS = b"/keys/"  # the path before a key
# `next` is the last key, %-escaped where it is not printable ASCII (or is a %), so that
# it leads past keys of any bytes; a plain key works as `after` too, unless it has a %.
CURSOR_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")


class NotFound(KVError):
    pass


class Unauthorized(KVError):
    """A request without the server's password as its bearer token."""


class Exposed(KVError):
    """Asked to listen beyond loopback with no password (and not told --insecure)."""


STATUS: dict[type[Exception], int] = {
    InvalidKey: 422,
    InvalidTTL: 422,
    ValueTooLarge: 413,
    NotFound: 404,
    Unauthorized: 401,
    StoreClosed: 503,  # closing: try another server
    BackendUnavailable: 503,  # the database failed
}
"""The HTTP status of each error a request can meet; its text is the JSON `detail`."""


def create_app(store: Store, *, manage: bool = False, password: str | None = None) -> FastAPI:
    """The HTTP API over `store`; with `manage`, the app opens and closes the store; with
    `password`, every request must bring it as its bearer token."""
    expected = None if password is None else f"Bearer {password}".encode()

    def authorized(request: Request) -> None:
        if expected is None:
            return
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):  # constant time; never logged
            raise Unauthorized("this server needs its password: Authorization: Bearer <password>")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage:
            await store.open()
        try:
            yield
        finally:
            if manage:
                await store.close()

    app = FastAPI(title="sdlab kv", lifespan=lifespan, dependencies=[Depends(authorized)])

    for error, status in STATUS.items():
        app.add_exception_handler(error, _answer_with(status))

    @app.get("/keys/{key:path}", responses={404: {"description": "no such key"}})
    async def get_key(raw: Annotated[bytes, Depends(path_key)]) -> Response:
        found = await store.get_with_ttl(raw)
        if found is None:
            raise NotFound(f"no key {_shown(raw)!r} (never set, deleted, or expired)")
        value, ttl = found
        headers = {"X-TTL": str(ttl)}
        return Response(value, media_type="application/octet-stream", headers=headers)

    @app.put("/keys/{key:path}", responses={412: {}, 413: {}, 422: {}})
    async def put_key(
        raw: Annotated[bytes, Depends(path_key)],
        request: Request,
        ttl: Annotated[float | None, Query(gt=0, description="Seconds to live.")] = None,
        nx: Annotated[bool, Query(description="Only if the key does not exist.")] = False,
        xx: Annotated[bool, Query(description="Only if the key exists.")] = False,
    ) -> JSONResponse:
        if nx and xx:
            return JSONResponse(status_code=422, content={"detail": "nx and xx exclude each other"})
        value = await _body(request, store.max_value)
        stored = await store.set(raw, value, ttl, nx=nx, xx=xx)
        if not stored:
            condition = "exists already" if nx else "does not exist"
            return JSONResponse(
                status_code=412,
                content={
                    "detail": f"not stored: the key {_shown(raw)!r} {condition} (asked: "
                    f"{'nx' if nx else 'xx'})"
                },
            )
        stored_as = {"key": _shown(raw), "stored": True, "bytes": len(value), "ttl": ttl}
        return JSONResponse(stored_as)

    @app.delete("/keys/{key:path}", status_code=204, responses={404: {}})
    async def delete_key(raw: Annotated[bytes, Depends(path_key)]) -> Response:
        if not await store.delete(raw):
            raise NotFound(f"no key {_shown(raw)!r} to delete")
        return Response(status_code=204)

    @app.get("/keys")
    async def list_keys(
        prefix: str = "",
        after: Annotated[str | None, Query(description="The `next` of the last page.")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_SCAN)] = 100,
    ) -> dict[str, Any]:
        start = unquote_to_bytes(after) if after else None
        keys, following = await store.scan(prefix, after=start, count=limit)
        return {
            "keys": [_shown(k) for k in keys],
            "next": None if following is None else quote_from_bytes(following, CURSOR_SAFE),
        }

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return store.stats()

    return app


def path_key(key: str, request: Request) -> bytes:
    """The key of a `/keys/{key}` path, as the bytes the client %-escaped. Starlette
    decodes the path as UTF-8, turning each byte that is not into U+FFFD (`/keys/%FF`
    would store the key EF BF BD), so the key is read from the raw path instead."""
    raw_path = request.scope.get("raw_path")
    if raw_path is None:  # optional in ASGI (uvicorn and httpx give it): UTF-8 it is
        return as_key(key)
    root = request.scope.get("root_path", "").encode()
    path = raw_path.removeprefix(root)
    if not path.startswith(KEYS):
        raise InvalidKey("a key's path starts with /keys/, not %-escaped")
    return as_key(unquote_to_bytes(path[len(KEYS) :]))


def _shown(key: bytes) -> str:
    """A key in JSON: as UTF-8, with `\\x..` escapes for bytes that are not."""
    return key.decode("utf-8", "backslashreplace")


def _answer_with(status: int) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None

    async def answer(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(status_code=status, content={"detail": str(exc)}, headers=headers)

    return answer


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused with ValueTooLarge as soon as it passes `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ValueTooLarge(f"a value is at most {limit} bytes, this one is {declared}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ValueTooLarge(f"a value is at most {limit} bytes, this one is longer")
        chunks.append(chunk)
    return b"".join(chunks)


def is_loopback(host: str) -> bool:
    """Is `host` an address only this machine reaches (127.0.0.0/8, ::1, localhost)?"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it may resolve to anything
        return False


def check_exposure(host: str, password: str | None, insecure: bool) -> None:
    """Redis's protected mode, decided before listening: with no password, only loopback
    (anyone who reaches the port could read and flush everything) unless `insecure`."""
    if password is None and not insecure and not is_loopback(host):
        raise Exposed(
            f"refusing to listen on {host} with no password: give --requirepass (or "
            "SDLAB_KV_PASSWORD), listen on 127.0.0.1, or say --insecure"
        )


class _Embedded(uvicorn.Server):
    """uvicorn inside our own server: SIGINT and SIGTERM stay ours (uvicorn would take
    them over for as long as it serves, and raise them again when it stops)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(
    store: Store,
    *,
    host: str = "127.0.0.1",
    http_port: int | None = 8080,
    resp_port: int | None = 6380,
    ready: Callable[[dict[str, int]], None] | None = None,
    password: str | None = None,
    insecure: bool = False,
    output_limit: int | None = None,
) -> None:
    """Open `store`, serve it over HTTP and RESP (a port of None: not that one) until
    SIGINT or SIGTERM, then stop taking requests, answer those taken, commit what is
    queued, and close. `password` guards both (AUTH, a bearer token); without one only
    a loopback `host` is allowed, unless `insecure`."""

    check_exposure(host, password, insecure)
    await store.open()
    resp: RespServer | None = None
    try:
        ports: dict[str, int] = {}
        if resp_port is not None:
            limits = {} if output_limit is None else {"output_limit": output_limit}
            resp = RespServer(store, host=host, port=resp_port, password=password, **limits)
            await resp.start()
            ports["resp"] = resp.port
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        if http_port is not None:
            config = uvicorn.Config(
                create_app(store, password=password),
                host=host,
                port=http_port,
                log_level="warning",
                lifespan="on",
            )
            http = _Embedded(config)
            # Bound here, so that a port in use is an OSError now, and connections wait in
            # the backlog until uvicorn accepts them.
            listening = socket.create_server((host, http_port))
            ports["http"] = listening.getsockname()[1]
            task = loop.create_task(http.serve(sockets=[listening]))
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if ready is not None:
            ready(ports)
        await stop.wait()
        if http_port is not None:
            http.should_exit = True
            with contextlib.suppress(Exception):
                await task
    finally:
        if resp is not None:
            await resp.close()
        await store.close()


class ServerProcess(_ServerProcess):
    """`sdlab kv serve` in a process of its own: for the benchmark, the crash test and the
    docs, which all need a real server they can stop or kill.

        with ServerProcess("sqlite:////tmp/kv.db") as server:
            client = redis.Redis(port=server.resp_port)
            ...
            server.kill()          # SIGKILL: a crash

    A kv server on free loopback ports; ready once the last port it opens (HTTP, or
    the Redis protocol's with `http=False`) accepts connections. `stop()` is SIGTERM:
    the server commits what is queued, answers what it took, and exits.
    """

    def __init__(
        self,
        backend: str,
        *,
        naive: bool = False,
        http: bool = True,
        extra: list[str] | None = None,
        timeout: float = 60,
    ) -> None:
        self.backend = backend
        self.resp_port = int(port_for.select_random())
        self.http_port = int(port_for.select_random()) if http else 0
        command = sdlab_command(
            "kv", "serve", "--db", backend, "--port", str(self.resp_port),
            *(["--http-port", str(self.http_port)] if http else ["--no-http"]),
            *(["--naive"] if naive else []),
            *(extra or []),
        )  # fmt: skip
        super().__init__(
            command,
            ready_port=self.http_port or self.resp_port,
            name="kv server",
            stop_signal=signal.SIGTERM,
            timeout=timeout,
        )

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def resp_url(self) -> str:
        return f"redis://127.0.0.1:{self.resp_port}/0"
