"""The HTTP service as its clients call it (in process; test_processes.py runs it for real)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Query

from sdlab.polling import Delays, Fleet, PollingClient
from sdlab.polling.model import seed_ids
from sdlab.polling.polls import MAX_TIMEOUT
from sdlab.polling.service import ServerId, create_app
from tests.helpers import eventually

LATER = Delays(to_do=3600, in_progress=3600)


@pytest.fixture
async def http(mysql_db: str, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    fleet = await Fleet.open(mysql_db, redis_url=redis_url, delays=LATER)
    app = create_app(fleet, seed=["server-1", "server-2"])
    async with app.lifespan():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://polling") as client:
            yield client


async def test_short_and_long_status(http: httpx.AsyncClient) -> None:
    short = await http.get("/short/status/server-1")
    assert short.status_code == 200
    assert short.json()["status"] == "NOT_YET_CREATED"
    assert short.headers["cache-control"] == "no-store"
    version = short.json()["version"]
    assert (await http.get("/long/status/server-1")).json() == short.json()  # since=0

    held = await http.get("/long/status/server-1", params={"since": version, "timeout": 0.05})
    assert held.status_code == 304
    assert held.content == b""

    waiting = asyncio.create_task(
        http.get("/long/status/server-1", params={"since": version, "timeout": 30})
    )

    async def waiters() -> int:
        return int((await http.get("/stats")).json()["waiting"])

    assert await eventually(waiters, 1) == 1
    created = await http.post("/create/server-1")
    assert created.status_code == 202
    assert created.json()["status"] == "TO_DO"
    answer = await waiting
    assert answer.status_code == 200
    assert answer.json() == created.json()
    assert answer.json()["version"] > version


async def test_the_servers_and_their_changes(http: httpx.AsyncClient) -> None:
    listed = (await http.get("/servers")).json()
    assert [s["server_id"] for s in listed["servers"]] == ["server-1", "server-2"]
    assert listed["version"] == 2
    everything = (await http.get("/long/servers", params={"since": 0})).json()
    assert everything == listed
    assert (await http.get("/long/servers", params={"since": 2, "timeout": 0})).status_code == 304
    await http.post("/create/server-2")
    for _ in range(2):  # each `since` its own answer, at the same version
        changed = (await http.get("/long/servers", params={"since": 2})).json()
        assert changed["version"] == 3
        assert [(s["server_id"], s["status"]) for s in changed["servers"]] == [
            ("server-2", "TO_DO")
        ]
        everything = (await http.get("/long/servers", params={"since": 0})).json()
        assert [s["version"] for s in everything["servers"]] == [1, 3]


async def test_a_since_newer_than_the_servers_own_version_waits(
    mysql_db: str, redis_url: str
) -> None:
    """Versions are table-wide: a `since` from /servers (or another server) is newer than
    most servers' own versions, and a long poll on one of them must still wait."""
    fleet = await Fleet.open(mysql_db, redis_url=redis_url, delays=LATER)
    app = create_app(fleet, seed=seed_ids(5))
    async with app.lifespan():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://polling") as http:
            created = await http.post("/create/server-2")
            assert created.json()["version"] == 6
            began = time.monotonic()
            held = await http.get("/long/status/server-1", params={"since": 6, "timeout": 0.5})
            assert held.status_code == 304
            assert time.monotonic() - began >= 0.5
            waiting = asyncio.create_task(
                http.get("/long/status/server-1", params={"since": 6, "timeout": 30})
            )
            await asyncio.sleep(0.1)
            assert not waiting.done()
            changed = await http.post("/create/server-1")
            assert (await waiting).json() == changed.json()


async def test_terminate_makes_a_server_creatable_again(mysql_db: str, redis_url: str) -> None:
    fleet = await Fleet.open(mysql_db, redis_url=redis_url, delays=Delays(0, 0))
    app = create_app(fleet, seed=["server-1"])
    async with (
        app.lifespan(),
        PollingClient(
            "http://polling",
            http=httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://polling"
            ),
        ) as client,
    ):
        await client.create("server-1")
        statuses = [s.status.value async for s in client.follow("server-1")]
        assert statuses[-1] == "DONE"
        conflict = await client.http.post("/create/server-1")
        assert conflict.status_code == 409
        assert "already created" in conflict.json()["detail"]
        assert (await client.terminate("server-1")).status.value == "NOT_YET_CREATED"
        assert (await client.create("server-1")).status.value == "TO_DO"
        await client.http.aclose()


@pytest.mark.parametrize(
    ("method", "path", "params", "status", "detail"),
    [
        ("get", "/short/status/nope", {}, 404, "no server 'nope'"),
        ("get", "/long/status/nope", {}, 404, "no server 'nope'"),
        ("post", "/create/nope", {}, 404, "no server 'nope'"),
        ("post", "/terminate/nope", {}, 404, "no server 'nope'"),
        ("get", "/long/status/server-1", {"timeout": -1}, 422, "greater than or equal to 0"),
        ("get", "/long/status/server-1", {"timeout": 61}, 422, "less than or equal to 60"),
        ("get", "/long/status/server-1", {"timeout": "nan"}, 422, "finite number"),
        ("get", "/long/status/server-1", {"timeout": "soon"}, 422, "valid number"),
        ("get", "/long/servers", {"timeout": "inf"}, 422, "finite number"),
        ("get", "/long/status/server-1", {"since": -1}, 422, "greater than or equal to 0"),
        ("get", "/long/status/server-1", {"since": "x"}, 422, "valid integer"),
        ("get", "/short/status/bad name!", {}, 422, "String should match pattern"),
        # The server decodes the path once; "%25" is a literal "%", not a second escape.
        ("get", "/short/status/server%252D1", {}, 422, "String should match pattern"),
        ("get", "/long/status/server%252D1", {}, 422, "String should match pattern"),
        ("post", "/create/" + "x" * 65, {}, 422, "String should match pattern"),
    ],
)
async def test_bad_requests_say_what_was_wrong(
    http: httpx.AsyncClient,
    method: str,
    path: str,
    params: dict[str, Any],
    status: int,
    detail: str,
) -> None:
    answer = await http.request(method.upper(), path, params=params)
    assert answer.status_code == status
    assert detail in json.dumps(answer.json()["detail"])


@pytest.mark.parametrize(
    "path",
    [
        "/long/status/server-1?timeout=-1",
        "/long/status/server-1?timeout=nan&since=x",
        "/long/status/bad name!?since=-1&timeout=61",
        "/long/status/server-1?since=",
    ],
)
async def test_bad_parameters_are_reported_as_fastapi_reports_them(
    http: httpx.AsyncClient, path: str
) -> None:
    """The polls bypass FastAPI: the same request to a FastAPI route declaring the same
    parameters must get the same 422 body."""
    api = FastAPI()

    @api.get("/long/status/{server_id}")
    async def long_status(
        server_id: ServerId,
        since: Annotated[int, Query(ge=0)] = 0,
        timeout: Annotated[float, Query(ge=0, le=MAX_TIMEOUT, allow_inf_nan=False)] = 30,
    ) -> None: ...

    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://fastapi") as fastapi:
        expected = await fastapi.get(path)
    answer = await http.get(path)
    assert (answer.status_code, answer.json()) == (422, expected.json())


async def test_polls_answer_head_and_refuse_other_methods(http: httpx.AsyncClient) -> None:
    """HEAD is GET without the body (RFC 9110 requires both); any other method on a poll
    is 405 with `Allow`, as FastAPI answers for its own routes. A 304 carries no
    Content-Length (it has no body, and it would not be the 200's)."""
    got = await http.get("/short/status/server-1")
    head = await http.head("/short/status/server-1")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == got.headers["content-length"]
    assert head.headers["content-type"] == "application/json"
    version = got.json()["version"]
    held = await http.head("/long/status/server-1", params={"since": version, "timeout": 0})
    assert held.status_code == 304
    assert "content-length" not in held.headers
    for method, path in [
        ("POST", "/short/status/server-1"),
        ("DELETE", "/long/status/server-1"),
        ("PUT", "/long/servers"),
    ]:
        refused = await http.request(method, path)
        assert refused.status_code == 405, (method, path)
        assert refused.headers["allow"] == "GET, HEAD"
        assert refused.json() == {"detail": "Method Not Allowed"}


async def test_create_while_in_progress_is_409_with_the_server(http: httpx.AsyncClient) -> None:
    first = await http.post("/create/server-1")
    second = await http.post("/create/server-1")
    assert second.status_code == 409
    assert "is being created" in second.json()["detail"]
    assert second.json()["server"] == first.json()
    assert (await http.post("/terminate/server-1")).status_code == 409


async def test_the_page_long_polls(http: httpx.AsyncClient) -> None:
    page = await http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "/long/servers?since=" in page.text
