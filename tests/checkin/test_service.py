"""The HTTP API in process (the page test runs it for real): 201, 409, 404, 422."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from sdlab.checkin.service import create_app
from tests.helpers import eventually


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(db_url, pool=4)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://checkin") as client:
            yield client


async def test_the_demo_airline_is_seeded(http: httpx.AsyncClient) -> None:
    trips = (await http.get("/trips")).json()
    assert len(trips) == 8
    assert trips[0] == {
        "id": trips[0]["id"],
        "name": "SA 101, day 1",
        "flight": "SA 101",
        "airline": "sdlab Air",
        "seats": 120,
        "free": 120,
    }
    seats = (await http.get(f"/trips/{trips[0]['id']}/seats")).json()
    assert seats["map"] == ["x" * 20] * 6
    assert (seats["seats"], seats["free"], seats["taken"]) == (120, 120, {})


async def test_a_check_in_takes_the_first_free_seat_or_the_one_asked(
    http: httpx.AsyncClient,
) -> None:
    trip = (await http.get("/trips")).json()[0]["id"]
    first = await http.post(f"/trips/{trip}/checkin", json={"user_id": 7})
    assert first.status_code == 201
    assert first.json() == {"trip_id": trip, "user_id": 7, "seat": "1A"}
    chosen = await http.post(f"/trips/{trip}/checkin", json={"user_id": 8, "seat": "12C"})
    assert chosen.status_code == 201
    assert chosen.json()["seat"] == "12C"
    seats = (await http.get(f"/trips/{trip}/seats")).json()
    assert seats["taken"] == {"1A": 7, "12C": 8}
    assert seats["map"][2] == "x" * 11 + "*" + "x" * 8  # line C, row 12
    assert (await http.get("/trips")).json()[0]["free"] == 118


async def test_conflicts_are_409(http: httpx.AsyncClient) -> None:
    trip = (await http.get("/trips")).json()[0]["id"]
    assert (
        await http.post(f"/trips/{trip}/checkin", json={"user_id": 1, "seat": "3B"})
    ).status_code == 201

    taken = await http.post(f"/trips/{trip}/checkin", json={"user_id": 2, "seat": "3B"})
    assert taken.status_code == 409
    assert taken.json() == {"detail": f"seat 3B on trip {trip} is taken"}

    twice = await http.post(f"/trips/{trip}/checkin", json={"user_id": 1})
    assert twice.status_code == 409
    assert twice.json() == {"detail": "user 1 already has seat 3B", "seat": "3B"}

    for user in range(2, 121):  # fill the other 119 seats
        assert (
            await http.post(f"/trips/{trip}/checkin", json={"user_id": user})
        ).status_code == 201
    full = await http.post(f"/trips/{trip}/checkin", json={"user_id": 500})
    assert full.status_code == 409
    assert full.json() == {"detail": f"trip {trip} has no free seat"}


async def test_the_same_user_twice_at_once_gets_one_seat(http: httpx.AsyncClient) -> None:
    trip = (await http.get("/trips")).json()[1]["id"]
    answers = await asyncio.gather(
        *(http.post(f"/trips/{trip}/checkin", json={"user_id": 42}) for _ in range(4))
    )
    assert sorted(a.status_code for a in answers) == [201, 409, 409, 409]
    assert len((await http.get(f"/trips/{trip}/seats")).json()["taken"]) == 1


async def test_unknown_ids_are_404(http: httpx.AsyncClient) -> None:
    trip = (await http.get("/trips")).json()[0]["id"]
    for path, body, detail in [
        ("/trips/9999/checkin", {"user_id": 1}, "no trip 9999"),
        (f"/trips/{trip}/checkin", {"user_id": 5000}, "no user 5000"),
        (f"/trips/{trip}/checkin", {"user_id": 1, "seat": "21A"}, f"trip {trip} has no seat 21A"),
        (f"/trips/{trip}/checkin", {"user_id": 1, "seat": "3G"}, f"trip {trip} has no seat 3G"),
    ]:
        answer = await http.post(path, json=body)
        assert (answer.status_code, answer.json()) == (404, {"detail": detail}), path
    assert (await http.get("/trips/9999/seats")).json() == {"detail": "no trip 9999"}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"user_id": "seven"},
        {"user_id": 0},
        {"user_id": 1, "seat": "C12"},
        {"user_id": 1, "seat": ""},
    ],
    ids=["no user", "not a number", "zero", "seat backwards", "empty seat"],
)
async def test_bad_input_is_422(http: httpx.AsyncClient, body: dict[str, object]) -> None:
    trip = (await http.get("/trips")).json()[0]["id"]
    answer = await http.post(f"/trips/{trip}/checkin", json=body)
    assert answer.status_code == 422
    assert answer.json()["detail"]
    assert (await http.post("/trips/0/checkin", json={"user_id": 1})).status_code == 422
    assert (await http.post("/trips/x/checkin", json={"user_id": 1})).status_code == 422


async def test_a_crowd_fills_the_trip(http: httpx.AsyncClient) -> None:
    trip = (await http.get("/trips")).json()[2]["id"]
    started = await http.post(
        f"/trips/{trip}/crowd", json={"strategy": "skip-locked", "users": 130, "spread": 0.2}
    )
    assert started.status_code == 202

    async def state() -> str:
        return str((await http.get(f"/trips/{trip}/seats")).json()["run"]["state"])

    assert await eventually(state, "done", timeout=30) == "done"
    seats = (await http.get(f"/trips/{trip}/seats")).json()
    assert seats["free"] == 0
    assert seats["run"]["told"] == seats["run"]["seated"] == 120
    assert (await http.post(f"/trips/{trip}/crowd", json={"strategy": "nope"})).status_code == 422
