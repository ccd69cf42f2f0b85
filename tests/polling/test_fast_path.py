"""Plain long polls answered inside uvicorn's protocol (`service.PollProtocol`): the same
bytes as the ASGI path, the fall-backs, pipelining, hang-ups and release. These tests
also hold the uvicorn internals the protocol leans on: they fail first on a uvicorn
release that changes them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import port_for
import pytest
import uvicorn

from sdlab.polling import Delays, Fleet
from sdlab.polling.polls import Deadlines, plain_long_poll
from sdlab.polling.service import create_app, poll_protocol
from tests.helpers import eventually

LATER = Delays(to_do=3600, in_progress=3600)
Answer = tuple[int, list[tuple[str, str]], bytes]


class Connection:
    """One raw keep-alive connection: the exact status, headers and body."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def send(self, *targets: str, method: str = "GET") -> None:
        self.writer.write(
            b"".join(f"{method} {t} HTTP/1.1\r\nhost: polling\r\n\r\n".encode() for t in targets)
        )

    async def answer(self, *, head: bool = False) -> Answer:
        status_line, *lines = (await self.reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
        headers = [
            (name.lower(), value)
            for name, _, value in (line.partition(": ") for line in lines if line)
        ]
        length = int(dict(headers).get("content-length", 0))
        body = b"" if head else await self.reader.readexactly(length)
        return int(status_line.split()[1]), headers, body

    async def get(self, target: str) -> Answer:
        self.send(target)
        return await self.answer()

    def close(self) -> None:
        self.writer.close()


Connect = Callable[[], Awaitable[Connection]]


@pytest.fixture
async def fleet(mysql_db: str, redis_url: str) -> AsyncIterator[Fleet]:
    fleet = await Fleet.open(mysql_db, redis_url=redis_url, delays=LATER)
    await fleet.start()
    yield fleet
    await fleet.close()


@pytest.fixture
async def connect(fleet: Fleet) -> AsyncIterator[Connect]:
    """uvicorn with the protocol, in this event loop, on a free port."""
    port = int(port_for.select_random())
    config = uvicorn.Config(
        create_app(fleet, seed=["server-1", "server-2"]),
        host="127.0.0.1",
        port=port,
        http=poll_protocol(fleet),
        log_level="warning",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn's own flag
        await asyncio.sleep(0.01)
    opened: list[Connection] = []

    async def open_one() -> Connection:
        connection = Connection(*await asyncio.open_connection("127.0.0.1", port))
        opened.append(connection)
        return connection

    yield open_one
    for connection in opened:
        connection.close()
    server.should_exit = True
    await serving


def _without_date(answer: Answer) -> Answer:
    status, headers, body = answer
    return status, [(n, v) for n, v in headers if n != "date"], body


async def parked(fleet: Fleet, count: int) -> None:
    async def probe() -> int:
        return int(fleet.stats()["parked"])

    assert await eventually(probe, count) == count


def test_only_plain_long_polls_are_taken() -> None:
    assert plain_long_poll(b"/long/status/server-1") == ("server-1", 0, 30.0)
    assert plain_long_poll(b"/long/status/s.1?since=7&timeout=2.5") == ("s.1", 7, 2.5)
    assert plain_long_poll(b"/long/status/s?timeout=60&since=007") == ("s", 7, 60.0)
    for other in (
        b"/long/status/",
        b"/long/status/a/b",
        b"/long/status/serv%65r-1",
        b"/long/status/s?since=-1",
        b"/long/status/s?since=+1",
        b"/long/status/s?timeout=61",
        b"/long/status/s?timeout=nan",
        b"/long/status/s?timeout=1e1",
        b"/long/status/s?since=1&other=2",
        b"/long/status/s?since=1&",
        b"/long/servers?since=1",
        b"/short/status/s",
        b"http://polling/long/status/s",
    ):
        assert plain_long_poll(other) is None, other


async def test_the_answers_are_the_asgi_paths_own(fleet: Fleet, connect: Connect) -> None:
    """The same request, taken by the protocol and (with a parameter only Polls
    ignores) by the ASGI path: the same status, headers and body."""
    version = fleet.get("server-1").version  # type: ignore[union-attr]
    fast, slow = await connect(), await connect()
    for query in ("since=0", f"since={version}&timeout=0", f"since={version}&timeout=0.05"):
        plain = await fast.get(f"/long/status/server-1?{query}")
        routed = await slow.get(f"/long/status/server-1?{query}&via=asgi")
        assert _without_date(plain) == _without_date(routed)
    assert plain[0] == 304
    assert fleet.stats()["waiting"] == 0


async def test_a_change_answers_every_parked_poll_with_the_same_bytes(
    fleet: Fleet, connect: Connect
) -> None:
    version = fleet.get("server-1").version  # type: ignore[union-attr]
    connections = [await connect() for _ in range(20)]
    for connection in connections:
        connection.send(f"/long/status/server-1?since={version}&timeout=30")
    await parked(fleet, 20)
    assert fleet.stats()["waiting"] == 20
    created = await fleet.create("server-1")
    answers = [await c.answer() for c in connections]
    assert {(status, body) for status, _, body in answers} == {(200, created.body)}
    assert fleet.stats()["waiting"] == 0
    assert fleet.woken.count == 20
    # The connections go on: the next poll on each is parked again, at the new version.
    for connection in connections:
        connection.send(f"/long/status/server-1?since={created.version}&timeout=30")
    await parked(fleet, 20)


async def test_what_the_mirror_cannot_answer_goes_the_usual_way(
    fleet: Fleet, connect: Connect
) -> None:
    connection = await connect()
    assert (await connection.get("/long/status/nope"))[0] == 404  # unknown: the database says
    assert (await connection.get("/long/status/server-1?since=-1"))[0] == 422
    ahead = fleet.version + 5  # another history of the table: answered now, resynced
    assert (await connection.get(f"/long/status/server-1?since={ahead}"))[0] == 200
    connection.send("/long/status/server-1", method="HEAD")
    status, headers, body = await connection.answer(head=True)
    assert (status, body) == (200, b"")
    assert dict(headers)["content-length"] == str(len(fleet.get("server-1").body))  # type: ignore[union-attr]
    assert (await connection.get("/servers"))[0] == 200  # FastAPI, on the same connection


async def test_a_request_pipelined_behind_a_parked_poll_waits_its_turn(
    fleet: Fleet, connect: Connect
) -> None:
    version = fleet.get("server-1").version  # type: ignore[union-attr]
    connection = await connect()
    connection.send(
        f"/long/status/server-1?since={version}&timeout=30",
        "/short/status/server-2",
        f"/long/status/server-2?since={fleet.version}&timeout=0",
    )
    await parked(fleet, 1)
    created = await fleet.create("server-1")
    first, second, third = [await connection.answer() for _ in range(3)]
    assert (first[0], first[2]) == (200, created.body)
    assert second[0] == 200
    assert b'"server-2"' in second[2]
    assert third[0] == 304


async def test_a_parked_poll_whose_client_hangs_up_is_dropped(
    fleet: Fleet, connect: Connect
) -> None:
    version = fleet.get("server-1").version  # type: ignore[union-attr]
    connection = await connect()
    connection.send(f"/long/status/server-1?since={version}&timeout=60")
    await parked(fleet, 1)
    connection.close()
    await parked(fleet, 0)
    assert fleet.stats()["waiting"] == 0


async def test_released_polls_are_told_to_poll_again(fleet: Fleet, connect: Connect) -> None:
    version = fleet.get("server-1").version  # type: ignore[union-attr]
    connection = await connect()
    connection.send(f"/long/status/server-1?since={version}&timeout=60")
    await parked(fleet, 1)
    fleet.release_waiters()
    status, _, body = await connection.answer()
    assert status == 503
    assert b"shutting down" in body
    assert fleet.stats()["waiting"] == 0


async def test_polls_in_pieces_or_with_connection_close_are_read_by_the_parser(
    fleet: Fleet, connect: Connect
) -> None:
    """A re-poll that arrives whole is read without the parser; one in two segments, or
    one with a header that changes how it is answered, goes through it, and gets the
    same answer."""
    body = fleet.get("server-1").body  # type: ignore[union-attr]
    connection = await connect()
    connection.writer.write(b"GET /long/status/server-1?since=0 HTTP/1.1\r\nho")
    await connection.writer.drain()
    await asyncio.sleep(0.05)
    connection.writer.write(b"st: polling\r\n\r\n")
    assert (await connection.answer())[::2] == (200, body)
    connection.writer.write(
        b"GET /long/status/server-1?since=0 HTTP/1.1\r\nhost: polling\r\nconnection: close\r\n\r\n"
    )
    status, headers, got = await connection.answer()
    assert (status, got) == (200, body)
    assert ("connection", "close") in headers
    assert await connection.reader.read() == b""  # closed after the answer


async def test_deadlines_share_one_timer_per_tick() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(0.02)
    fired: list[str] = []
    slots = {
        name: deadlines.add(loop, delay, name, lambda name=name: fired.append(name))
        for name, delay in [("a", 0.0), ("b", 0.001), ("c", 0.05), ("d", 0.05)]
    }
    deadlines.discard(slots["d"], "d")
    assert slots["a"] in (slots["b"], slots["b"] - 1)  # same tick, or the one before
    await asyncio.sleep(0.1)
    assert sorted(fired) == ["a", "b", "c"]
    assert len(deadlines) == 0
