"""The service as its users run it: `sdlab streamlogs serve` in a process of its own,
killed and started again; `curl -N` as the client."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
from pathlib import Path

import httpx
import pytest
from httpx_sse import ServerSentEvent

from tests.helpers import eventually, sdlab
from tests.streamlogs.conftest import ServerProcess, follow, read_events, steps


async def _new_deployment(url: str, lines: int, interval: float) -> str:
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            f"{url}/deployments", params={"lines": lines, "interval": interval}
        )
    assert answer.status_code == 201, answer.text
    assert answer.headers["location"] == f"/deployments/{answer.json()['id']}"
    return str(answer.json()["id"])


@pytest.mark.slow
async def test_a_killed_server_loses_nothing(server_process: ServerProcess) -> None:
    """SIGKILL mid-deployment: the next server finds the log on disk, carries the mock
    deployment on from its last whole line, and a client resuming with its
    Last-Event-ID gets every line once."""
    await server_process.start()
    deployment = await _new_deployment(server_process.url, lines=40, interval=0.05)
    url = f"{server_process.url}/logs/{deployment}"
    before = await read_events(url, stop=lambda events: len(events) == 12)
    await server_process.kill()
    await server_process.start()
    after = await read_events(url, last_event_id=before[-1].id)
    assert steps(before) + steps(after) == list(range(1, 41))
    assert json.loads(after[-1].data)["state"] == "finished"
    async with httpx.AsyncClient() as http:
        listed = (await http.get(f"{server_process.url}/api/deployments")).json()
    assert [d["id"] for d in listed] == [deployment]


@pytest.mark.slow
async def test_a_client_rides_through_a_restart(server_process: ServerProcess) -> None:
    """A client following the stream the way EventSource does (reconnect, Last-Event-ID)
    while the server is stopped with Ctrl-C and started again."""
    await server_process.start()
    deployment = await _new_deployment(server_process.url, lines=30, interval=0.05)
    events: list[ServerSentEvent] = []
    following = asyncio.create_task(
        follow(f"{server_process.url}/logs/{deployment}", events, attempts=100)
    )
    await eventually(lambda: _value(len(events) >= 5), True)
    # Ctrl-C ends the open streams at once (uvicorn would otherwise wait for them, then
    # cancel them when its graceful timeout runs out) and exits.
    code, printed = await server_process.interrupt()
    assert code == 130  # sdlab's exit code for Ctrl-C
    assert "timeout graceful shutdown exceeded" not in printed
    await server_process.start()
    connections = await following
    assert connections >= 2
    assert steps(events) == list(range(1, 31))


async def test_ctrl_c_stops_the_seeds_design_cleanly(tmp_path: Path, unused_port: int) -> None:
    """`serve --seed` runs the seed's app, which has no hub of streams to end."""
    original = ServerProcess(tmp_path / "data", unused_port, original=True)
    try:
        await original.start()
        code, printed = await original.interrupt()
    finally:
        await original.kill()
        original.process.close()
    assert code == 130
    assert "Traceback" not in printed
    assert "Error" not in printed


@pytest.mark.slow
async def test_two_servers_on_one_data_dir_write_each_deployment_once(
    server_process: ServerProcess, unused_tcp_port: int
) -> None:
    """A second server started on the data directory while the first is running a
    deployment must not resume it too (only deployments no one writes), and each
    serves the log."""
    await server_process.start()
    deployment = await _new_deployment(server_process.url, lines=30, interval=0.1)
    second = ServerProcess(server_process.data_dir, unused_tcp_port)
    try:
        await second.start()
        for server in (server_process, second):
            events = await read_events(f"{server.url}/logs/{deployment}")
            assert steps(events) == list(range(1, 31))
    finally:
        await second.kill()
        second.process.close()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
async def test_curl_follows_and_resumes(server_process: ServerProcess) -> None:
    await server_process.start()
    deployment = await _new_deployment(server_process.url, lines=8, interval=0.01)
    url = f"{server_process.url}/logs/{deployment}"
    whole = await _curl(url)
    ids = [line[4:] for line in whole.splitlines() if line.startswith("id: ")]
    assert len(ids) == 9  # eight lines, then the end event with the last id again
    assert whole.split("\n\n")[-2].startswith(f"id: {ids[-1]}\nevent: end\ndata: ")
    resumed = await _curl(url, "-H", f"Last-Event-ID: {ids[4]}")
    assert [line for line in resumed.splitlines() if line.startswith("data: ")] == [
        line for line in whole.splitlines() if line.startswith("data: ")
    ][5:]


async def _curl(url: str, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "curl", "-N", "-sS", "--max-time", "30", *args, url, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    assert process.returncode == 0
    return out.decode()


def test_serve_refuses_a_data_dir_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("not a folder")
    done = sdlab("streamlogs", "serve", "--data-dir", str(target))
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: --data-dir {target} is not a directory"


def test_serve_on_a_taken_port_fails_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = sdlab("streamlogs", "serve", "--port", str(port), "--data-dir", str(tmp_path))
    assert done.returncode == 1
    assert "address already in use" in done.stderr
    assert "Traceback" not in done.stderr


async def _value(value: object) -> object:
    return value
