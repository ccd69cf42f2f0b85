"""What bounds the service's use: running deployments, a log's size, how many ended
ones are kept, deleting one; and HEAD on a stream."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import httpx
import pytest

from sdlab.streamlogs import DeploymentStore, Plan
from tests.helpers import sdlab
from tests.streamlogs.conftest import ServerProcess, Service, StartService, read_events


async def test_past_max_running_a_new_deployment_is_429(start_service: StartService) -> None:
    service = await start_service(max_running=2)
    async with httpx.AsyncClient(base_url=service.url) as http:
        for _ in range(2):
            made = await http.post("/deployments", params={"lines": 2, "interval": 60})
            assert made.status_code == 201
        refused = await http.post("/deployments", params={"lines": 2, "interval": 60})
        assert refused.status_code == 429
        assert "deployments running: 2, the most" in refused.json()["detail"]
        assert len(service.store.list()) == 2  # nothing made for the refused one
        await service.runner.stop()  # they end (as far as this server runs them)
        again = await http.post("/deployments", params={"lines": 1, "interval": 0})
        assert again.status_code == 201


async def test_a_log_that_reaches_max_log_size_stops_its_deployment(
    start_service: StartService,
) -> None:
    service = await start_service(max_log_size=2_000)
    async with httpx.AsyncClient(base_url=service.url) as http:
        made = (await http.post("/deployments", params={"lines": 1_000, "interval": 0})).json()
        events = await read_events(f"{service.url}{made['stream']}")
        one = (await http.get(f"/api/deployments/{made['id']}")).json()
    end = json.loads(events[-1].data)
    assert end["state"] == "failed"
    assert "reached its limit of 2,000 bytes" in end["reason"]
    assert one["reason"] == end["reason"]
    assert 1_900 < one["size"] <= 2_000  # whole lines only, up to the limit
    assert len(events) - 1 == service.store.get(made["id"]).log_path.read_bytes().count(b"\n")


async def test_only_the_newest_ended_deployments_are_kept(start_service: StartService) -> None:
    """Retention: past `keep` ended deployments, starting one deletes the oldest; a
    running one is never deleted."""
    service = await start_service(keep=2)
    store = service.store
    running = store.create()
    ended = []
    for _ in range(3):
        await asyncio.sleep(0.002)  # ids and times are per millisecond
        deployment = store.create()
        deployment.append("done")
        deployment.finish()
        ended.append(deployment.id)
    async with httpx.AsyncClient(base_url=service.url) as http:
        made = (await http.post("/deployments", params={"lines": 1, "interval": 30})).json()
        listed = [d["id"] for d in (await http.get("/api/deployments")).json()]
        assert listed == [made["id"], ended[2], ended[1], running.id]
        assert (await http.get(f"/logs/{ended[0]}")).status_code == 404
    assert not (store.root / ended[0]).exists()


async def test_what_a_crashed_process_left_half_done_is_swept(
    start_service: StartService,
) -> None:
    """A folder renamed for deletion and not removed, or made for a new deployment and
    never renamed into place, goes with the next retention pass."""
    service = await start_service()
    root = service.store.root
    for name in (".deleted-01abc-01def", ".new-01old", ".new-01fresh"):
        (root / name).mkdir()
        (root / name / "log").write_text("left behind\n")
    os.utime(root / ".new-01old", (time.time() - 3600,) * 2)
    async with httpx.AsyncClient(base_url=service.url) as http:
        assert (await http.post("/deployments", params={"lines": 1})).status_code == 201
    left = sorted(path.name for path in root.iterdir() if path.name.startswith("."))
    assert left == [".new-01fresh"]  # it may be another server's, being made now


@pytest.mark.slow
async def test_serve_applies_its_limits_from_the_command_line(
    tmp_path: Path, unused_port: int
) -> None:
    """The flags, on a real `sdlab streamlogs serve`: --keep prunes at start-up."""
    store = DeploymentStore(tmp_path / "data")
    for _ in range(4):
        await asyncio.sleep(0.002)
        store.create().finish()
    kept = [status.id for status in store.list()][:2]
    server = ServerProcess(
        tmp_path / "data", unused_port, "--keep", "2", "--max-running", "1", "--max-log-size",
        "500", "--allow-origin", "http://ops.example",
    )  # fmt: skip
    try:
        await server.start()
        async with httpx.AsyncClient(base_url=server.url) as http:
            assert [d["id"] for d in (await http.get("/api/deployments")).json()] == kept
            made = await http.post("/deployments", params={"lines": 100, "interval": 0.05})
            assert made.status_code == 201
            busy = await http.post("/deployments", params={"lines": 100, "interval": 0.05})
            assert busy.status_code == 429
            end = (await read_events(f"{server.url}{made.json()['stream']}"))[-1]
            assert "limit of 500 bytes" in json.loads(end.data)["reason"]
            cors = await http.get("/api/stats", headers={"origin": "http://ops.example"})
            assert cors.headers["access-control-allow-origin"] == "http://ops.example"
    finally:
        await server.kill()
        server.process.close()


def test_serve_shows_its_limits_and_their_defaults() -> None:
    shown = sdlab("streamlogs", "serve", "--help").stdout
    for flag in ("--max-running", "--max-log-size", "--keep", "--allow-origin"):
        assert flag in shown
    for default in ("[default: 100]", "[default: 67108864]", "[default: 1000]"):
        assert default in shown


async def test_delete_removes_an_ended_deployment_and_refuses_a_running_one(
    service: Service,
) -> None:
    finished = service.runner.start(Plan(lines=2, interval=0))
    running = service.runner.start(Plan(lines=2, interval=60))
    broken = service.store.root / "broken-one"
    broken.mkdir()
    async with httpx.AsyncClient(base_url=service.url) as http:
        await read_events(f"{service.url}/logs/{finished.id}")
        gone = await http.delete(f"/deployments/{finished.id}")
        assert (gone.status_code, gone.content) == (204, b"")
        assert (await http.get(f"/api/deployments/{finished.id}")).status_code == 404
        assert (await http.delete(f"/deployments/{finished.id}")).status_code == 404
        busy = await http.delete(f"/deployments/{running.id}")
        assert busy.status_code == 409
        assert "is running" in busy.json()["detail"]
        assert (await http.delete("/deployments/broken-one")).status_code == 204
        listed = [d["id"] for d in (await http.get("/api/deployments")).json()]
    assert listed == [running.id]
    assert sorted(p.name for p in service.store.root.iterdir()) == [running.id]


async def test_head_of_a_stream_answers_its_headers(service: Service) -> None:
    deployment = service.store.create()
    deployment.append("a line")
    async with httpx.AsyncClient(base_url=service.url) as http:
        head = await http.head(f"/logs/{deployment.id}")
        assert head.status_code == 200
        assert head.headers["content-type"] == "text/event-stream"
        assert head.headers["cache-control"] == "no-cache"
        assert head.content == b""
        assert (await http.head("/logs/01nosuchdeployment")).status_code == 404
        bad = await http.head(f"/logs/{deployment.id}", headers={"Last-Event-ID": "3"})
        assert bad.status_code == 400
        put = await http.put(f"/logs/{deployment.id}")
        assert (put.status_code, put.headers["allow"]) == (405, "GET, HEAD")
    assert service.clients() == 0  # HEAD opened no stream
