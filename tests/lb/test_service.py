"""The admin API over a running balancer: list, add, drain, weight, remove, metrics,
and its errors."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest

from sdlab.lb.balancer import Balancer
from sdlab.lb.config import load
from sdlab.lb.demo import serve_backends
from sdlab.lb.service import create_app


@pytest.fixture
async def backend_ports() -> AsyncIterator[list[int]]:
    servers = await serve_backends(0, count=3, delay=(0, 0))
    yield [s.sockets[0].getsockname()[1] for s in servers]
    for server in servers:
        server.close()


@pytest.fixture
async def balancer(backend_ports: list[int]) -> AsyncIterator[Balancer]:
    config = load(
        overrides={
            "listen": {"port": 0},
            "health": {"interval": 0.2},
            "backend": [{"address": f"127.0.0.1:{p}"} for p in backend_ports[:2]],
        }
    )
    async with Balancer(config) as running:
        yield running


@pytest.fixture
async def admin(balancer: Balancer) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(balancer))
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
        yield client


async def through(balancer: Balancer, requests: int) -> Counter[str]:
    """`requests` GETs through the balancer, counted by the backend that answered."""
    seen: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{balancer.port}") as client:
        for _ in range(requests):
            answer = await client.get("/", headers={"Connection": "close"})
            seen[answer.text.split()[1]] += 1
    return seen


async def test_backends_lists_each_with_its_state_and_counters(
    admin: httpx.AsyncClient, balancer: Balancer, backend_ports: list[int]
) -> None:
    await through(balancer, 4)
    listed = (await admin.get("/backends")).json()
    assert [b["address"] for b in listed] == [f"127.0.0.1:{p}" for p in backend_ports[:2]]
    assert {b["state"] for b in listed} == {"up"}
    assert [b["connections"] for b in listed] == [2, 2]
    assert all(b["bytes_out"] > 0 and b["checks_ok"] >= 1 for b in listed)
    summary = (await admin.get("/")).json()
    assert summary["strategy"] == "round-robin"
    assert summary["accepted"] == 4


async def test_add_drain_weight_and_remove(
    admin: httpx.AsyncClient, balancer: Balancer, backend_ports: list[int]
) -> None:
    first, second, third = (f"127.0.0.1:{p}" for p in backend_ports)
    added = await admin.post("/backends", json={"address": third, "weight": 2})
    assert added.status_code == 201
    assert added.json()["state"] == "up"
    assert set(await through(balancer, 6)) == {str(p) for p in backend_ports}

    drained = await admin.post(f"/backends/{first}/drain")
    assert drained.json()["state"] == "draining"
    assert str(backend_ports[0]) not in await through(balancer, 6)
    assert (await admin.post(f"/backends/{first}/ready")).json()["state"] == "up"

    weighted = await admin.put(f"/backends/{second}/weight", json={"weight": 4})
    assert weighted.json()["weight"] == 4

    assert (await admin.delete(f"/backends/{third}")).status_code == 200
    assert [b["address"] for b in (await admin.get("/backends")).json()] == [first, second]
    assert str(backend_ports[2]) not in await through(balancer, 4)


async def test_errors_say_what_was_wrong(
    admin: httpx.AsyncClient, backend_ports: list[int]
) -> None:
    missing = await admin.post("/backends/127.0.0.1:1/drain")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no backend 127.0.0.1:1"}
    again = await admin.post("/backends", json={"address": f"127.0.0.1:{backend_ports[0]}"})
    assert again.status_code == 409
    assert "already in the pool" in again.json()["detail"]
    bad = await admin.post("/backends", json={"address": "nowhere"})
    assert bad.status_code == 422
    assert "not HOST:PORT" in bad.json()["detail"]
    zero = await admin.put(f"/backends/127.0.0.1:{backend_ports[0]}/weight", json={"weight": 0})
    assert zero.status_code == 422


async def test_a_backend_that_stops_is_marked_down_by_the_checks(
    admin: httpx.AsyncClient, balancer: Balancer
) -> None:
    dead = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = dead.sockets[0].getsockname()[1]
    dead.close()
    await dead.wait_closed()
    await admin.post("/backends", json={"address": f"127.0.0.1:{port}"})
    for _ in range(50):
        listed = {b["address"]: b for b in (await admin.get("/backends")).json()}
        if listed[f"127.0.0.1:{port}"]["state"] == "down":
            break
        await asyncio.sleep(0.1)
    down = listed[f"127.0.0.1:{port}"]
    assert down["state"] == "down"
    assert "tcp check" in down["reason"]
    assert down["connections"] == 0  # the checks found it before any client did


async def test_metrics_in_prometheus_format(admin: httpx.AsyncClient, balancer: Balancer) -> None:
    await through(balancer, 2)
    answer = await admin.get("/metrics")
    assert answer.headers["content-type"].startswith("text/plain")
    text = answer.text
    assert "sdlab_lb_accepted_total 2.0" in text
    first = next(iter(balancer.pool)).name
    assert f'sdlab_lb_backend_state{{backend="{first}",state="up"}} 1.0' in text
    assert f'sdlab_lb_backend_connections_total{{backend="{first}"}} 1.0' in text
