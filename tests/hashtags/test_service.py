"""The HTTP API in process (the stream and the page under a real uvicorn): each endpoint's
JSON, 404 for a tag never counted, 422 for a bad limit, cursor or window, and the live
stream sending a new `trending` event once more posts are counted."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from httpx_sse import ServerSentEvent, aconnect_sse

from sdlab.hashtags import service
from sdlab.hashtags.posts import Post, Posts, Tagged
from sdlab.hashtags.store import Delivered, Store
from tests.helpers import eventually

BIG = 2**60  # post ids past 2**53, where a JavaScript number loses digits


def delivered(post_id: int, text: str, created: float | None = None) -> Delivered:
    at = time.time() if created is None else created
    return Delivered(Tagged.of(Post(post_id, 7, text, round(at, 3))))


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """`app` under a real uvicorn (`service.server`) in this event loop, on a free port."""
    server = service.server(app, port=0, timeout_graceful_shutdown=3)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def http(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    app = service.create_app(store.db.url, pool=4, tick=0.1)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hashtags") as client:
            yield client


async def test_a_tag_by_any_spelling(store: Store, http: httpx.AsyncClient) -> None:
    await store.add([delivered(BIG + 1, "#PyThOn at first", 1_800_000_000.0)])
    await store.add([delivered(BIG + 2, "then #python, and #rust", 1_800_000_060.5)])
    expected = {
        "tag": "PyThOn",
        "key": "python",
        "count": 2,
        "first_seen": "2027-01-15T08:00:00+00:00",
        "last_seen": "2027-01-15T08:01:00.500000+00:00",
        "posts": [
            {
                "id": BIG + 2,
                "id_str": str(BIG + 2),
                "user": 7,
                "text": "then #python, and #rust",
                "created": "2027-01-15T08:01:00.500000+00:00",
            },
            {
                "id": BIG + 1,
                "id_str": str(BIG + 1),
                "user": 7,
                "text": "#PyThOn at first",
                "created": "2027-01-15T08:00:00+00:00",
            },
        ],
    }
    for spelling in ["python", "PYTHON", "%23Python", "%EF%BC%83python"]:  # '#', fullwidth '#'
        answer = await http.get(f"/tag/{spelling}")
        assert (answer.status_code, answer.json()) == (200, expected), spelling
    assert (await http.get("/tag/rust")).json()["count"] == 1


async def test_a_tag_never_counted_is_404(store: Store, http: httpx.AsyncClient) -> None:
    await store.add([delivered(1, "#counted")])
    answer = await http.get("/tag/%23never")
    assert answer.status_code == 404
    assert answer.json() == {"detail": "no tag '#never' counted"}
    assert (await http.get("/tag/%23")).status_code == 404


async def test_the_top_tags_page_through_every_tag(store: Store, http: httpx.AsyncClient) -> None:
    posts = Posts(seed=5, tags=60)
    batch = [Delivered(Tagged.of(posts.next())) for _ in range(400)]
    await store.add(batch)
    expected = Counter(tag.key for d in batch for tag in d.tagged.tags)

    first = (await http.get("/hashtags")).json()
    assert len(first["tags"]) == 20
    assert set(first["tags"][0]) == {"tag", "key", "count"}
    seen: list[dict[str, Any]] = []
    cursor = ""  # an empty cursor is the first page
    pages = 0
    while cursor is not None:
        answer = await http.get("/hashtags", params={"limit": 9, "cursor": cursor})
        assert answer.status_code == 200
        body = answer.json()
        seen += body["tags"]
        cursor = body["next"]
        pages += 1
    assert pages == -(-len(expected) // 9)
    assert seen[:20] == first["tags"]
    assert {t["key"]: t["count"] for t in seen} == dict(expected)
    assert len(seen) == len(expected)
    ranked = [(-t["count"], t["key"]) for t in seen]
    assert ranked == sorted(ranked)
    assert (await http.get("/hashtags", params={"limit": 100})).json()["next"] is None


@pytest.mark.parametrize("limit", ["0", "101", "-3", "many"])
async def test_a_bad_limit_is_422(http: httpx.AsyncClient, limit: str) -> None:
    for path in ["/hashtags", "/trending", "/trending/stream"]:
        answer = await http.get(path, params={"limit": limit})
        assert answer.status_code == 422, path
        assert answer.json()["detail"][0]["loc"] == ["query", "limit"]


async def test_a_bad_cursor_is_422(store: Store, http: httpx.AsyncClient) -> None:
    await store.add([delivered(1, "#one #two #three")])
    answer = await http.get("/hashtags", params={"cursor": "not-a-cursor"})
    assert answer.status_code == 422
    assert answer.json() == {"detail": "cursor 'not-a-cursor' is not one this service handed out"}


async def test_trending_is_growth_against_the_window_before(
    store: Store, http: httpx.AsyncClient
) -> None:
    now = time.time()
    batch, post_id = [], 0
    for tag, before, recent in [("steady", 30, 30), ("rising", 2, 20), ("falling", 40, 5)]:
        for i in range(before + recent):
            post_id += 1
            at = now - 20 * 60 if i < before else now - 60  # the window before, or this one
            batch.append(delivered(post_id, f"#{tag}", at))
    await store.add(batch)

    answer = await http.get("/trending", params={"window": "15m"})
    assert answer.status_code == 200
    assert answer.json() == {
        "window": "15m",
        "minutes": 15,
        "tags": [
            {"tag": "rising", "key": "rising", "now": 20, "before": 2, "growth": 2.5},
            {"tag": "steady", "key": "steady", "now": 30, "before": 30, "growth": 1.0},
            {"tag": "falling", "key": "falling", "now": 5, "before": 40, "growth": 0.3},
        ],
    }
    wide = (await http.get("/trending", params={"window": "1h", "limit": 1})).json()
    assert (wide["minutes"], wide["tags"]) == (
        60,
        [{"tag": "steady", "key": "steady", "now": 60, "before": 0, "growth": 7.0}],
    )
    assert (await http.get("/trending")).json()["window"] == "15m"  # the default


@pytest.mark.parametrize("window", ["15x", "0m", "25h", "fifteen", ""])
async def test_a_bad_window_is_422_naming_it(http: httpx.AsyncClient, window: str) -> None:
    for path in ["/trending", "/trending/stream"]:
        answer = await http.get(path, params={"window": window})
        assert answer.status_code == 422, path
        assert answer.headers["content-type"] == "application/json"
        assert f"window {window!r}" in answer.json()["detail"], path


async def test_stats_and_the_page(store: Store, http: httpx.AsyncClient) -> None:
    assert (await http.get("/stats")).json() == {"posts": 0, "tags": 0, "mentions": 0}
    await store.add([delivered(1, "#a #b"), delivered(2, "#a"), delivered(3, "no tags")])
    assert (await http.get("/stats")).json() == {"posts": 3, "tags": 2, "mentions": 3}

    page = await http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'new EventSource("/trending/stream' in page.text
    assert "src=" not in page.text  # nothing from a CDN: the script and style are inline
    assert "https://" not in page.text


async def _next_trending(events: AsyncIterator[ServerSentEvent]) -> dict[str, Any]:
    async for event in events:
        if event.event == "trending":
            return json.loads(event.data)  # type: ignore[no-any-return]
    raise AssertionError("the stream ended")


async def test_the_stream_sends_trending_now_and_again_when_it_changes(store: Store) -> None:
    await store.add([delivered(i, "#first") for i in range(1, 4)])
    app = service.create_app(store.db.url, pool=4, tick=0.1)
    async with (
        serving(app) as url,
        httpx.AsyncClient(timeout=10) as client,
        aconnect_sse(client, "GET", f"{url}/trending/stream?window=5m") as source,
    ):
        assert source.response.headers["content-type"].startswith("text/event-stream")
        events = source.aiter_sse()
        async with asyncio.timeout(5):
            first = await _next_trending(events)
        assert (first["window"], first["minutes"]) == ("5m", 5)
        assert [(t["key"], t["now"]) for t in first["tags"]] == [("first", 3)]

        await store.add([delivered(i, "#second #first") for i in range(10, 15)])
        async with asyncio.timeout(5):
            second = await _next_trending(events)
        assert [(t["key"], t["now"]) for t in second["tags"]] == [("first", 8), ("second", 5)]
        assert app.state.streams == 1

    async def streams() -> int:  # the client went, and its stream ended with it
        return int(app.state.streams)

    assert await eventually(streams, 0) == 0


async def test_between_changes_the_stream_sends_keepalives(store: Store) -> None:
    app = service.create_app(store.db.url, pool=4, tick=0.05)
    async with serving(app) as url, httpx.AsyncClient(timeout=10) as client:
        async with client.stream("GET", f"{url}/trending/stream") as answer:
            text = ""
            async with asyncio.timeout(5):
                async for chunk in answer.aiter_text():
                    text += chunk
                    if text.count(": keepalive\n\n") >= 2:
                        break
        assert text.startswith("retry: 1000\n\n")
        assert text.count("event: trending\n") == 1
        expected = {"window": "15m", "minutes": 15, "tags": []}
        assert f"data: {json.dumps(expected)}\n\n" in text


async def test_stopping_the_server_ends_the_open_streams(store: Store) -> None:
    app = service.create_app(store.db.url, pool=4, tick=0.1)
    async with httpx.AsyncClient(timeout=10) as client:
        async with serving(app) as url:
            source = aconnect_sse(client, "GET", f"{url}/trending/stream")
            opened = await source.__aenter__()
            events = opened.aiter_sse()
            async with asyncio.timeout(5):
                await _next_trending(events)
            started = time.monotonic()
        assert time.monotonic() - started < 2  # not uvicorn's graceful timeout (3 s)
        async with asyncio.timeout(2):
            rest = [event async for event in events]
        assert all(event.event != "trending" for event in rest)
        await source.__aexit__(None, None, None)
