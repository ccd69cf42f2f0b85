"""A streamlogs service for each test: in this process (to look inside its hub), or in
a process of its own (to kill it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from httpx_sse import ServerSentEvent, aconnect_sse
from httpx_sse._decoders import SSEDecoder

from sdlab.infra import process
from sdlab.streamlogs import DeploymentStore, Hub, MockRunner, create_app
from sdlab.streamlogs import server as serve


@dataclass
class Service:
    """A running service: its address, and its parts to look at."""

    url: str
    app: FastAPI

    @property
    def store(self) -> DeploymentStore:
        return self.app.state.store  # type: ignore[no-any-return]

    @property
    def hub(self) -> Hub:
        return self.app.state.hub  # type: ignore[no-any-return]

    @property
    def runner(self) -> MockRunner:
        return self.app.state.runner  # type: ignore[no-any-return]

    def clients(self) -> int:
        return self.hub.stats()["clients"]  # type: ignore[no-any-return]


@asynccontextmanager
async def serving(app: FastAPI, port: int = 0, **options: Any) -> AsyncIterator[Service]:
    """`app` under a real uvicorn on `port` (0: a free one) of this event loop (`options`
    for `sdlab.streamlogs.server`)."""
    server = serve(app, port=port, timeout_graceful_shutdown=3, **options)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Service(f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        await task


StartService = Callable[..., Awaitable[Service]]


@pytest.fixture
async def start_service(tmp_path: Path) -> AsyncIterator[StartService]:
    """`await start_service(**create_app options)`: a service over tmp_path/data
    (`send_timeout` and `port` go to the server)."""
    async with AsyncExitStack() as stack:

        async def start(*, send_timeout: float = 30.0, port: int = 0, **options: Any) -> Service:
            options.setdefault("retry_ms", 200)
            app = create_app(tmp_path / "data", **options)
            return await stack.enter_async_context(
                serving(app, port=port, send_timeout=send_timeout)
            )

        yield start


@pytest.fixture
async def service(start_service: StartService) -> Service:
    return await start_service()


async def read_events(
    url: str,
    *,
    last_event_id: str | None = None,
    stop: Callable[[list[ServerSentEvent]], bool] = lambda events: False,
    timeout: float = 30,
) -> list[ServerSentEvent]:
    """The events of one connection to `url` (httpx-sse parses them, not our code) until
    the server ends the response or `stop(events)` says enough."""
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    events: list[ServerSentEvent] = []
    async with (
        asyncio.timeout(timeout),
        httpx.AsyncClient(timeout=None) as http,
        aconnect_sse(http, "GET", url, headers=headers) as source,
    ):
        source.response.raise_for_status()
        async for event in source.aiter_sse():
            if event.retry is not None and not event.data:
                continue  # httpx-sse hands over a `retry:`-only block; browsers do not
            events.append(event)
            if stop(events):
                break
    return events


async def follow(
    url: str, events: list[ServerSentEvent], *, attempts: int = 5, timeout: float = 30
) -> int:
    """What a browser's EventSource does: read `url` into `events`; when the connection
    breaks, connect again with the last id seen as Last-Event-ID; stop at the `end`
    event. Returns the number of connections made."""
    for attempt in range(1, attempts + 1):
        last_id = next((e.id for e in reversed(events) if e.id), None)
        headers = {} if last_id is None else {"Last-Event-ID": last_id}
        try:
            async with (
                asyncio.timeout(timeout),
                httpx.AsyncClient(timeout=None) as http,
                aconnect_sse(http, "GET", url, headers=headers) as source,
            ):
                async for event in source.aiter_sse():
                    if event.data or event.retry is None:
                        events.append(event)
        except httpx.TransportError:
            await asyncio.sleep(0.05)
            continue
        if events and events[-1].event == "end":
            return attempt
    raise AssertionError(f"no end event after {attempts} connections")


def parse_events(body: bytes) -> list[ServerSentEvent]:
    """The events in a whole response body, as a spec-following client sees them."""
    decoder, events = SSEDecoder(), []
    for line in body.decode().splitlines():
        event = decoder.decode(line)
        if event is not None and not (event.retry is not None and not event.data):
            events.append(event)
    return events


def steps(events: list[ServerSentEvent]) -> list[int]:
    """The step numbers of a mock deployment's lines ("... step 7/40 build: ...")."""
    return [int(e.data.split("step ")[1].split("/")[0]) for e in events if e.event == "message"]


class ServerProcess:
    """`sdlab streamlogs serve` in a process of its own, to kill and start again. The
    waits run in a thread, so that the test's own clients go on meanwhile."""

    def __init__(self, data_dir: Path, port: int, *options: str, original: bool = False) -> None:
        """`options` for `serve`; original: serve the seed's design (`--seed`), which
        has no /api/stats."""
        self.data_dir = data_dir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.process = process.ServerProcess(
            process.sdlab_command(
                "streamlogs", "serve", "--port", str(port), "--data-dir", str(data_dir),
                "--retry-ms", "300", *options, *(["--seed"] if original else []),
            ),
            ready_url=f"{self.url}/openapi.json" if original else f"{self.url}/api/stats",
            name="streamlogs server",
        )  # fmt: skip

    async def start(self) -> ServerProcess:
        await asyncio.to_thread(self.process.start)
        return self

    async def kill(self) -> None:
        """SIGKILL: no shutdown at all, as in a crash."""
        await asyncio.to_thread(self.process.kill)

    async def interrupt(self) -> tuple[int | None, str]:
        """Ctrl-C; wait for the process to end; its exit code and what it printed."""
        code = await asyncio.to_thread(self.process.stop)
        return code, self.process.output()


@pytest.fixture
async def server_process(tmp_path: Path, unused_port: int) -> AsyncIterator[ServerProcess]:
    """A (not yet started) server process over tmp_path/data; killed after the test."""
    server = ServerProcess(tmp_path / "data", unused_port)
    try:
        yield server
    finally:
        await server.kill()
        server.process.close()
