"""The stream over real HTTP (uvicorn on a port, clients on sockets): the SSE format,
resuming, errors, the shared reader, slow and vanished clients."""

from __future__ import annotations

import asyncio
import errno
import json
import socket
from pathlib import Path

import httpx
import psutil
import pytest
from asyncinotify import Inotify
from httpx_sse import ServerSentEvent

from sdlab.streamlogs import DeploymentStore, Plan, create_app
from sdlab.streamlogs.store import MAX_LINE
from tests.helpers import Proxy, eventually
from tests.streamlogs.conftest import (
    Service,
    StartService,
    follow,
    parse_events,
    read_events,
    serving,
    steps,
)


async def test_a_finished_deployment_streams_every_line_then_ends(service: Service) -> None:
    deployment = service.runner.start(Plan(lines=6, interval=0))
    events = await read_events(f"{service.url}/logs/{deployment.id}")
    assert steps(events) == [1, 2, 3, 4, 5, 6]
    end = events[-1]
    assert end.event == "end"
    assert json.loads(end.data)["state"] == "finished"
    # Every event has an id: the byte offset just past its line, growing.
    ids = [int(e.id) for e in events]
    assert ids[:-1] == sorted(set(ids[:-1]))
    assert ids[-1] == ids[-2] == deployment.size()
    # Reconnecting after the last id (as EventSource does when the response ends):
    # 204 No Content, which tells it to stop.
    async with httpx.AsyncClient() as http:
        again = await http.get(
            f"{service.url}/logs/{deployment.id}", headers={"Last-Event-ID": end.id}
        )
    assert (again.status_code, again.content) == (204, b"")


async def test_the_response_is_an_event_stream_with_a_retry(start_service: StartService) -> None:
    service = await start_service(retry_ms=1234)
    deployment = service.store.create()
    deployment.append("only line")
    deployment.finish()
    async with httpx.AsyncClient() as http:
        answer = await http.get(f"{service.url}/logs/{deployment.id}")
    assert answer.headers["content-type"] == "text/event-stream"
    assert answer.headers["cache-control"] == "no-cache"
    assert answer.text.startswith("retry: 1234\n\n")
    assert "id: 10\ndata: only line\n\n" in answer.text


async def test_last_event_id_resumes_with_no_gap_and_no_duplicate(service: Service) -> None:
    deployment = service.runner.start(Plan(lines=30, interval=0.01))
    url = f"{service.url}/logs/{deployment.id}"
    first = await read_events(url, stop=lambda events: len(events) == 10)
    rest = await read_events(url, last_event_id=first[-1].id)
    assert steps(first) + steps(rest) == list(range(1, 31))
    assert rest[-1].event == "end"


async def test_a_cut_connection_resumes_where_it_broke(service: Service) -> None:
    """A real reconnect: the connection dies mid-stream (a proxy drops both sides) and
    the client comes back with its Last-Event-ID, as EventSource does."""
    deployment = service.runner.start(Plan(lines=40, interval=0.02))
    port = int(service.url.rsplit(":", 1)[1])
    events: list[ServerSentEvent] = []
    async with Proxy(port) as proxy:
        url = f"http://127.0.0.1:{proxy.port}/logs/{deployment.id}"
        following = asyncio.create_task(follow(url, events))
        await eventually(lambda: _async(len(events) >= 10), True)
        proxy.cut()
        connections = await following
    assert connections >= 2
    assert steps(events) == list(range(1, 41))


@pytest.mark.parametrize(
    ("path", "status", "detail"),
    [
        ("/logs/01nosuchdeployment", 404, "no deployment '01nosuchdeployment'"),
        ("/deployments/01nosuchdeployment", 404, "no deployment"),
        ("/api/deployments/01nosuchdeployment", 404, "no deployment"),
        ("/logs/..", 422, "not a deployment id: '..'"),
        ("/logs/%2e%2e", 422, "not a deployment id: '..'"),
        ("/deployments/..", 422, "not a deployment id"),
        ("/logs/.hidden", 422, "not a deployment id"),
        ("/logs/" + "x" * 65, 422, "not a deployment id"),
        ("/logs/..%2f..%2fetc%2fpasswd", 404, "Not Found"),  # a '/': no route matches
        ("/logs/%2e%2e%2f%2e%2e%2fetc%2fpasswd", 404, "Not Found"),
    ],
)
async def test_unknown_and_malformed_ids(
    service: Service, path: str, status: int, detail: str
) -> None:
    """Sent on a raw socket: an HTTP client would tidy `..` away before sending it."""
    port = int(service.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split()[1] == str(status).encode()
    assert detail in json.loads(body)["detail"]


async def test_the_json_api(service: Service) -> None:
    async with httpx.AsyncClient(base_url=service.url) as http:
        made = await http.post("/deployments", params={"lines": 3, "interval": 0})
        assert made.status_code == 201
        await read_events(f"{service.url}{made.json()['stream']}")
        one = (await http.get(f"/api/deployments/{made.json()['id']}")).json()
        assert one["state"] == "finished"
        assert one["plan"] == {"lines": 3, "interval": 0.0}
        assert one["size"] > 0
        assert [d["id"] for d in (await http.get("/api/deployments")).json()] == [one["id"]]
        stats = (await http.get("/api/stats")).json()
        assert stats["tails"] == {}
        assert stats["resyncs"] >= 1  # it had finished: its client read the file
        assert stats["inotify"] is True
        for params in ({"lines": 0}, {"lines": 100_001}, {"interval": -1}, {"interval": 61}):
            wrong = await http.post("/deployments", params=params)
            assert wrong.status_code == 422
            assert wrong.json()["detail"][0]["loc"][0] == "query"


# "\xb2" is "²" to Starlette (headers are Latin-1): a digit to str.isdigit(), not to int().
@pytest.mark.parametrize("bad", ["abc", "-5", "3", "99999", "1" * 30, "\xb2", "1\xb9"])
async def test_a_last_event_id_that_is_no_event_is_refused(service: Service, bad: str) -> None:
    deployment = service.store.create()
    deployment.append("twelve bytes", "more")  # ids 13 and 18
    async with httpx.AsyncClient() as http:
        answer = await http.get(
            f"{service.url}/logs/{deployment.id}", headers={"Last-Event-ID": bad.encode("latin-1")}
        )
    assert answer.status_code == 400
    assert "is not the id of an event of this log" in answer.json()["detail"]


async def test_lines_written_by_another_writer_arrive_as_they_are_written(
    service: Service,
) -> None:
    """The service follows the file, whoever writes it (here the test, as a build runner
    in its own process would)."""
    deployment = service.store.create()
    url = f"{service.url}/logs/{deployment.id}"
    reading = asyncio.create_task(read_events(url))
    await eventually(lambda: _async(service.clients()), 1)
    for text in ["plain", "10%\r100%", "", "tab\there"]:
        deployment.append(text)
        await asyncio.sleep(0.01)
    _write_bytes(deployment.log_path, b"raw \xff\xfe\n")  # not UTF-8
    _write_bytes(deployment.log_path, b"y" * (MAX_LINE + 10) + b"\n")  # longer than an event
    _write_bytes(deployment.log_path, b"no newline at the end")
    deployment.finish()
    events = await reading
    data = [e.data for e in events if e.event in ("message", "more")]
    assert data[:4] == ["plain", "10%\n100%", "", "tab\there"]
    assert data[4] == "raw \ufffd\ufffd"
    assert data[5] + data[6] == "y" * (MAX_LINE + 10)  # cut in two events
    assert [e.event for e in events[5:8]] == ["message", "more", "message"]
    assert data[7] == "no newline at the end"  # the deployment ended: the line is whole
    assert events[-1].event == "end"
    # Its id is an id like any other: a client that saw it resumes after it.
    async with httpx.AsyncClient() as http:
        again = await http.get(url, headers={"Last-Event-ID": events[-2].id})
    assert again.status_code == 204


async def test_idle_streams_get_keepalive_comments(start_service: StartService) -> None:
    service = await start_service(keepalive=0.05)
    deployment = service.store.create()  # running, and silent
    received = b""
    async with (
        httpx.AsyncClient() as http,
        http.stream("GET", f"{service.url}/logs/{deployment.id}") as answer,
    ):
        async for chunk in answer.aiter_raw():
            received += chunk
            if received.count(b": keepalive\n\n") >= 2:
                break
    assert received.startswith(b"retry: 200\n\n")


async def test_many_clients_share_one_reader(service: Service) -> None:
    deployment = service.store.create()
    url = f"{service.url}/logs/{deployment.id}"
    readers = [asyncio.create_task(read_events(url)) for _ in range(20)]
    await eventually(lambda: _async(service.clients()), 20)
    stats = service.hub.stats()
    assert list(stats["tails"]) == [deployment.id]
    assert stats["tails"][deployment.id]["clients"] == 20
    # One open file for twenty clients.
    opened = [f for f in psutil.Process().open_files() if f.path == str(deployment.log_path)]
    assert len(opened) == 1
    for n in range(50):
        deployment.append(f"line {n}")
    deployment.finish()
    for events in await asyncio.gather(*readers):
        assert [e.data for e in events[:-1]] == [f"line {n}" for n in range(50)]
    stats = service.hub.stats()
    assert stats["lines read"] == 50  # each line read once, not once per client
    assert stats["tails"] == {}  # closed with its last client, and its file too
    assert not [f for f in psutil.Process().open_files() if f.path == str(deployment.log_path)]


async def test_a_burst_longer_than_the_window_reaches_clients_from_memory(
    start_service: StartService,
) -> None:
    """A build prints many lines at once, more than the tail's window: the tail hands
    them out a window at a time, and clients that keep up get every one from memory.
    (Published at once, the burst pushed their cursors out of the window, and each
    client read the file and encoded the burst again for itself.)"""
    service = await start_service(window=8)
    deployment = service.store.create()
    url = f"{service.url}/logs/{deployment.id}"
    readers = [asyncio.create_task(read_events(url)) for _ in range(5)]
    await eventually(lambda: _async(service.clients()), 5)
    lines = [f"line {n}" for n in range(100)]
    deployment.append(*lines)  # one write: the tail reads it in one go
    deployment.finish()
    for events in await asyncio.gather(*readers):
        assert [e.data for e in events if e.event == "message"] == lines
    assert service.hub.stats()["resyncs"] == 0


async def test_a_slow_client_stalls_no_one_and_is_resynced_from_the_file(
    start_service: StartService,
) -> None:
    """One client stops reading: its socket fills, its `send` waits. The others still get
    every line while it sleeps; when it reads again, it has fallen out of the window and
    catches up from the file, with every line once and in order."""
    service = await start_service(window=8)
    deployment = service.store.create()
    url = f"{service.url}/logs/{deployment.id}"
    small_window = httpx.AsyncHTTPTransport(
        socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)]
    )
    # 8 MB: more than the socket buffers can hold (the kernel's grow to 4 MB here).
    lines = [f"{n:05d} " + "z" * 16_000 for n in range(500)]
    async with (
        httpx.AsyncClient(transport=small_window, timeout=None) as slow_http,
        slow_http.stream("GET", url) as slow,  # headers read, then nothing
    ):
        fast = [asyncio.create_task(read_events(url)) for _ in range(3)]
        await eventually(lambda: _async(service.clients()), 4)
        for line in lines:
            deployment.append(line)
        deployment.finish()
        # The fast clients have everything while the slow one has read nothing.
        for events in await asyncio.gather(*fast):
            assert [e.data for e in events if e.event == "message"] == lines
        assert service.clients() == 1  # the slow one, still mid-stream
        resyncs = service.hub.stats()["resyncs"]
        body = b"".join([chunk async for chunk in slow.aiter_bytes()])  # now it reads
    events = parse_events(body)
    assert [e.data for e in events if e.event == "message"] == lines
    assert events[-1].event == "end"
    assert service.hub.stats()["resyncs"] > resyncs  # it caught up from the file


async def test_a_client_that_stops_reading_is_cut_and_resumes_with_no_gap(
    start_service: StartService,
) -> None:
    """A client that reads nothing while its stream has lines to send fills the socket
    buffers (megabytes in the kernel, for as long as it stays connected: TCP does not
    give up on a peer that answers). Once nothing has drained for `send_timeout`, the
    server drops the connection; reconnecting with the last id it read, the client gets
    the rest, every line once."""
    service = await start_service(send_timeout=0.5)
    deployment = service.store.create()
    url = f"{service.url}/logs/{deployment.id}"
    small_window = httpx.AsyncHTTPTransport(
        socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)]
    )
    lines = [f"{n:05d} " + "z" * 16_000 for n in range(500)]  # 8 MB
    async with (
        httpx.AsyncClient(transport=small_window, timeout=None) as http,
        http.stream("GET", url) as stuck,  # headers read, then nothing
    ):
        await eventually(lambda: _async(service.clients()), 1)
        deployment.append(*lines)
        deployment.finish()
        assert await eventually(lambda: _async(service.clients()), 0, timeout=20) == 0
        received = await _body_until_cut(stuck)
    before = [e for e in parse_events(received) if e.event == "message"]
    assert len(before) < len(lines)
    after = await read_events(url, last_event_id=before[-1].id if before else None)
    assert [e.data for e in before + after if e.event == "message"] == lines


async def test_stopping_the_server_ends_streams_that_are_catching_up(tmp_path: Path) -> None:
    """A client reading a long log from the file when the server stops: its stream ends
    there, as every other one does (it resumes on the next server), rather than going
    on to the end of the log while the shutdown waits for it."""
    deployment = DeploymentStore(tmp_path / "data").create()  # running: no end event
    lines = [f"{n:06d} " + "y" * 1_000 for n in range(30_000)]  # 30 MB
    deployment.append(*lines)
    async with serving(create_app(tmp_path / "data")) as service:
        reading = asyncio.create_task(read_events(f"{service.url}/logs/{deployment.id}"))
        await eventually(lambda: _async(service.clients()), 1)
    events = await reading  # the response ended cleanly: no error
    assert 0 < len(events) < len(lines)
    assert [e.data for e in events] == lines[: len(events)]


async def test_a_stream_asked_for_during_shutdown_ends_at_once(service: Service) -> None:
    """Once the server has begun to stop, an EventSource (it asks for text/event-stream)
    gets a 200 stream that ends at once, which it answers by reconnecting after `retry`;
    any other status would stop it for good. Other clients get a 503 that says why."""
    deployment = service.store.create()
    deployment.append("a line")
    url = f"{service.url}/logs/{deployment.id}"
    service.hub.end_streams()  # the first thing the server does when it stops
    async with httpx.AsyncClient() as http:
        stream = await http.get(url, headers={"accept": "text/event-stream"})
        plain = await http.get(url)
    assert stream.status_code == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert stream.text == "retry: 200\n\n"
    assert plain.status_code == 503
    assert plain.json() == {"detail": "the server is shutting down; reconnect in a moment"}
    assert service.hub.stats()["tails"] == {}


async def test_disconnected_clients_are_dropped_at_once(start_service: StartService) -> None:
    """No line is written and no keepalive is due: the server notices each hang-up from
    the connection itself, and the tail closes with its last client."""
    service = await start_service(keepalive=3600)
    deployment = service.store.create()
    url = f"{service.url}/logs/{deployment.id}"
    readers = [asyncio.create_task(read_events(url)) for _ in range(10)]
    await eventually(lambda: _async(service.clients()), 10)
    for reader in readers[:4]:
        reader.cancel()
    assert await eventually(lambda: _async(service.clients()), 6) == 6
    for reader in readers[4:]:
        reader.cancel()
    assert await eventually(lambda: _async(service.clients()), 0) == 0
    assert service.hub.stats()["tails"] == {}
    await asyncio.gather(*readers, return_exceptions=True)


async def test_a_failed_watch_leaves_no_tail_open(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """inotify refuses the watch (its watch limit reached): the request fails, and the
    tail it opened is not left behind with no client and its file open."""
    deployment = service.store.create()
    url = f"{service.url}/logs/{deployment.id}"

    def refuse(*args: object) -> None:
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    with monkeypatch.context() as patched:
        patched.setattr(Inotify, "add_watch", refuse)
        async with httpx.AsyncClient() as http:
            assert (await http.get(url)).status_code == 500
    assert service.hub.stats()["tails"] == {}
    log_path = str(deployment.log_path)
    assert log_path not in [f.path for f in psutil.Process().open_files()]
    deployment.append("after the failure")
    events = await read_events(url, stop=lambda events: len(events) == 1)
    assert [e.data for e in events] == ["after the failure"]


async def _body_until_cut(response: httpx.Response) -> bytes:
    """What arrives of `response` before its connection breaks (it must break)."""
    received = b""
    try:
        async for chunk in response.aiter_bytes():
            received += chunk
    except httpx.HTTPError:  # a reset, or a chunked body cut short
        return received
    raise AssertionError("the response ended normally")


async def _async(value: object) -> object:
    return value


def _write_bytes(path: Path, data: bytes) -> None:
    with path.open("ab") as log:
        log.write(data)
