"""Folders in the data directory that are not whole deployments: listed as broken,
each on a page of its own, and no one else's listing fails for them."""

from __future__ import annotations

import logging

import httpx
import pytest

from sdlab.streamlogs import Plan
from tests.streamlogs.conftest import StartService, read_events, steps

BROKEN = {
    "bad-json": "unreadable status.json",
    "no-state": "malformed status.json",
    "no-status": "its folder has no status.json",
    "no-log": "its folder has no log",
}


async def test_a_broken_folder_is_listed_as_broken_and_breaks_nothing(
    start_service: StartService, caplog: pytest.LogCaptureFixture
) -> None:
    service = await start_service()
    good = service.runner.start(Plan(lines=3, interval=0))
    await read_events(f"{service.url}/logs/{good.id}")
    root = service.store.root
    for name in BROKEN:
        (root / name).mkdir()
    (root / "bad-json" / "status.json").write_text('{"state": "runn')
    (root / "bad-json" / "log").touch()
    (root / "no-state" / "status.json").write_text('{"created": "2026-12-01T00:00:00Z"}')
    (root / "no-state" / "log").touch()
    (root / "no-status" / "log").touch()
    (root / "no-log" / "status.json").write_text(
        '{"id": "no-log", "state": "finished", "created": "2026-12-01T00:00:00Z"}'
    )
    (root / "stray-file").write_text("not a deployment")
    caplog.set_level(logging.WARNING, logger="sdlab.streamlogs.store")
    async with httpx.AsyncClient(base_url=service.url) as http:
        for _ in range(2):
            index = await http.get("/")
            listed = await http.get("/api/deployments")
            assert (index.status_code, listed.status_code) == (200, 200)
        assert listed.json()[0]["id"] == good.id
        assert listed.json()[0]["state"] == "finished"
        broken = {d["id"]: d for d in listed.json()[1:]}
        assert set(broken) == set(BROKEN)
        for name, problem in BROKEN.items():
            assert broken[name]["state"] == "broken"
            assert problem in broken[name]["problem"]
            assert f'href="/deployments/{name}"' in index.text
            page = await http.get(f"/deployments/{name}")
            assert page.status_code == 200
            assert 'data-state="broken"' in page.text
            assert problem in page.text
            one = await http.get(f"/api/deployments/{name}")
            assert one.json() == broken[name]
            stream = await http.get(f"/logs/{name}")
            assert stream.status_code == 409
            assert problem in stream.json()["detail"]
        assert "stray-file" not in index.text
        # Each broken folder is logged once, not once a request.
        logged = [r.getMessage() for r in caplog.records if "listed as broken" in r.message]
        assert len(logged) == len(BROKEN)
        # New deployments still start and stream.
        made = await http.post("/deployments", params={"lines": 2, "interval": 0})
        assert made.status_code == 201
        assert steps(await read_events(f"{service.url}{made.json()['stream']}")) == [1, 2]
