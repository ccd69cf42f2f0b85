"""The counts over HTTP, and a page where the trending tags move live.

    GET /                         the page: trending (live, by SSE) and the top tags
    GET /tag/{hashtag}            {"tag", "key", "count", "first_seen", "last_seen",
                                   "posts": [{"id", "id_str", "user", "text", "created"}]}
    GET /hashtags?limit=&cursor=  {"tags": [{"tag", "key", "count"}], "next": cursor | null}
    GET /trending?window=&limit=  {"window", "minutes",
                                   "tags": [{"tag", "key", "now", "before", "growth"}]}
    GET /trending/stream?window=  text/event-stream: a `trending` event (the body of
                                  /trending) at once, then one each tick it changed
    GET /stats                    {"posts", "tags", "mentions"}

`{hashtag}` is any spelling: `Python`, `#python`, `%23PYTHON`. Times are ISO 8601 in UTC;
post ids are 64-bit Snowflakes, too big for a JavaScript number, hence `id_str` beside
`id`. Errors are JSON with a `detail`: 404 a tag never counted; 422 a bad limit, cursor
or window; 503 the database is unavailable.

However many pages watch a window, the trending query runs once per tick for it
(`Latest`); a stream ends when its client goes, or when `Server` shuts down.
(No `from __future__ import annotations` here: FastAPI reads the annotations at run time.)
"""

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from importlib.resources import files
from typing import Annotated, Any

import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from sdlab import sql
from sdlab.hashtags.store import BadCursor, Store, Trend, window_minutes
from sdlab.pool import PoolError
from sdlab.sql import ConnectionLost, DatabaseUnavailable
from sdlab.streamlogs import sse

PAGE = files("sdlab.hashtags").joinpath("page.html").read_text()
RETRY_MS = 1000
"""How soon a page's EventSource connects again after losing the stream."""

Limit = Annotated[int, Query(ge=1, le=100, description="How many tags, 1 to 100.")]
Window = Annotated[str, Query(description="Minutes or hours: 5m, 15m, 1h (1m to 24h).")]


class BadWindow(ValueError):
    """A `window` that is not minutes or hours in range (422)."""


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _minutes(window: str) -> int:
    try:
        return window_minutes(window)
    except ValueError as exc:
        raise BadWindow(str(exc)) from exc


def _trending(window: str, minutes: int, trends: list[Trend]) -> dict[str, Any]:
    return {
        "window": window.strip(),
        "minutes": minutes,
        "tags": [
            {"tag": t.display, "key": t.key, "now": t.now, "before": t.before, "growth": t.growth}
            for t in trends
        ],
    }


class Latest:
    """Trending per (window, limit), asked of the store at most once per `max_age`
    seconds however many streams want it."""

    def __init__(self, store: Store, max_age: float) -> None:
        self.store = store
        self.max_age = max_age
        self._cache: dict[tuple[int, int], tuple[float, list[Trend]]] = {}
        self._locks: dict[tuple[int, int], asyncio.Lock] = {}

    async def get(self, minutes: int, limit: int) -> list[Trend]:
        key = (minutes, limit)
        async with self._locks.setdefault(key, asyncio.Lock()):
            at, trends = self._cache.get(key, (float("-inf"), []))
            if time.monotonic() - at >= self.max_age:
                trends = await self.store.trending(window=minutes, limit=limit)
                self._cache[key] = (time.monotonic(), trends)
            return trends


QUERY_TIMEOUT = 5.0  # seconds a request waits for a pooled session, and for each query


def create_app(db_url: str, *, pool: int = 10, tick: float = 1.0) -> FastAPI:
    """The service on the PostgreSQL database at `db_url` (its tables made at start-up);
    live streams look for a change every `tick` seconds."""
    if tick <= 0:
        raise ValueError(f"tick must be positive, got {tick}")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # A paused or overloaded database answers 503 within seconds, not never.
        async with sql.Database(
            db_url, max_size=pool, timeout=QUERY_TIMEOUT, query_timeout=QUERY_TIMEOUT
        ) as db:
            store = Store(db)
            await store.create()
            app.state.store = store
            app.state.latest = Latest(store, max_age=tick / 2)
            app.state.closing = asyncio.Event()
            app.state.streams = 0
            try:
                yield
            finally:
                app.state.closing.set()

    app = FastAPI(title="sdlab hashtags: counts, top tags and trending", lifespan=lifespan)

    def store_of(request: Request) -> Store:
        return request.app.state.store

    @app.exception_handler(BadCursor)
    @app.exception_handler(BadWindow)
    async def bad_parameter(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    @app.exception_handler(DatabaseUnavailable)
    @app.exception_handler(sql.QueryTimeout)
    @app.exception_handler(ConnectionLost)
    @app.exception_handler(PoolError)
    async def database_away(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": f"database unavailable: {exc}"})

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE, headers={"Cache-Control": "no-store"})

    @app.get("/tag/{hashtag}")
    async def tag(request: Request, hashtag: str) -> JSONResponse:
        view = await store_of(request).tag(hashtag)
        if view is None:
            return JSONResponse(status_code=404, content={"detail": f"no tag {hashtag!r} counted"})
        return JSONResponse(
            {
                "tag": view.display,
                "key": view.key,
                "count": view.count,
                "first_seen": _iso(view.first_seen),
                "last_seen": _iso(view.last_seen),
                "posts": [
                    {
                        "id": p.id,
                        "id_str": str(p.id),
                        "user": p.user,
                        "text": p.text,
                        "created": _iso(p.created),
                    }
                    for p in view.recent
                ],
            }
        )

    @app.get("/hashtags")
    async def hashtags(
        request: Request, limit: Limit = 20, cursor: str | None = None
    ) -> dict[str, Any]:
        page = await store_of(request).top(limit=limit, cursor=cursor or None)
        return {
            "tags": [{"tag": t.display, "key": t.key, "count": t.count} for t in page.tags],
            "next": page.cursor,
        }

    @app.get("/trending")
    async def trending(request: Request, window: Window = "15m", limit: Limit = 10) -> Any:
        minutes = _minutes(window)
        trends = await store_of(request).trending(window=minutes, limit=limit)
        return _trending(window, minutes, trends)

    @app.get("/trending/stream")
    async def trending_stream(
        request: Request, window: Window = "15m", limit: Limit = 10
    ) -> StreamingResponse:
        minutes = _minutes(window)  # a 422 before the stream starts, not inside it
        return StreamingResponse(
            _stream(request.app, window, minutes, limit, tick),
            media_type=sse.MEDIA_TYPE,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @app.get("/stats")
    async def stats(request: Request) -> dict[str, Any]:
        return await store_of(request).summary()

    return app


async def _stream(
    app: FastAPI, window: str, minutes: int, limit: int, tick: float
) -> AsyncIterator[bytes]:
    """A `trending` event now and on each tick the list changed, a keepalive comment on
    the others; an `unavailable` event, then the end, if the database goes (the page's
    EventSource connects again). Starlette cancels it when the client goes."""
    latest: Latest = app.state.latest
    closing: asyncio.Event = app.state.closing
    app.state.streams += 1
    try:
        yield sse.retry(RETRY_MS)
        sent = None
        while not closing.is_set():
            try:
                trends = await latest.get(minutes, limit)
            except (DatabaseUnavailable, ConnectionLost, PoolError) as exc:
                detail = json.dumps({"detail": f"database unavailable: {exc}"})
                yield sse.event(detail, event="unavailable")
                return
            body = json.dumps(_trending(window, minutes, trends), ensure_ascii=False)
            if body != sent:
                yield sse.event(body, event="trending")
                sent = body
            else:
                yield sse.comment("keepalive")
            with suppress(TimeoutError):
                await asyncio.wait_for(closing.wait(), tick)
    finally:
        app.state.streams -= 1


class Server(uvicorn.Server):
    """uvicorn, ending the open streams when it shuts down (left alone, it waits for
    them, and a trending stream never finishes by itself)."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        closing = getattr(getattr(self.config.app, "state", None), "closing", None)
        if closing is not None:
            closing.set()
        await super().shutdown(sockets)


def server(app: FastAPI, *, host: str = "127.0.0.1", port: int = 8020, **options: Any) -> Server:
    """A uvicorn server for `app`: `server.run()`, or `await server.serve()` in a loop
    (`port=0`: a free one). `options` go to `uvicorn.Config`."""
    options.setdefault("log_level", "warning")
    options.setdefault("timeout_graceful_shutdown", 5)
    return Server(uvicorn.Config(app, host=host, port=port, **options))
