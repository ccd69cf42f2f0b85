"""The check-in desk over HTTP, and a page where the seat map fills live.

    GET  /                              the page: pick a trip, watch its map, run a crowd
    GET  /trips                         [{"id", "name", "flight", "airline", "seats", "free"}]
    GET  /trips/{id}/seats              {"trip_id", "seats", "free", "map": 6 lines of * and x,
                                         "taken": {"1A": user_id, ...}, "run": the last crowd}
    POST /trips/{id}/checkin            {"user_id": 7} or {"user_id": 7, "seat": "12C"}
                                        201 {"trip_id", "user_id", "seat"}
    POST /trips/{id}/crowd              {"strategy": "skip-locked", "users": 120, "spread": 2}
                                        202: the trip is emptied, then `users` passengers
                                        (users 1..N) check in over `spread` seconds
                                        with that strategy, over the service's pool

Errors are JSON with a `detail`: 404 unknown trip, user or seat; 409 the trip is full, the
seat is taken, or the user already has a seat (with `"seat"`); 422 bad input; 503 the
database is unavailable.
(No `from __future__ import annotations` here: FastAPI reads the annotations at run time.)
"""

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from sdlab.checkin import seatmap
from sdlab.checkin.booking import AlreadyCheckedIn, Conflict, NotFound
from sdlab.checkin.desk import Desk
from sdlab.checkin.strategies import NAMES, Passenger, book
from sdlab.pool import PoolError
from sdlab.sql import ConnectionLost, DatabaseUnavailable

PAGE = files("sdlab.checkin").joinpath("page.html").read_text()
SEAT = r"^[1-9][0-9]?[A-Z]$"

TripId = Annotated[int, PathParam(ge=1, le=2**31 - 1, description="A trip's id.")]


class CheckinRequest(BaseModel):
    user_id: int = Field(ge=1, le=2**31 - 1)
    seat: str | None = Field(default=None, pattern=SEAT, description='A seat such as "12C".')


class CrowdRequest(BaseModel):
    strategy: str = Field(default="skip-locked", pattern="|".join(f"^{n}$" for n in NAMES))
    users: int = Field(default=120, ge=1, le=1000)
    spread: float = Field(default=2.0, ge=0, le=60, description="Seconds over which they arrive.")


class CrowdRunning(Conflict):
    """A crowd is already checking in on that trip (409)."""


def create_app(url: str, *, seed: bool = True, pool: int = 20) -> FastAPI:
    """The service on the database at `url` (created if missing); at start-up the tables,
    and the demo airline if `seed` and the database has no trips."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        desk = await Desk.open(url, max_size=pool)
        try:
            if seed:
                await desk.seed()
            app.state.desk = desk
            app.state.runs = {}
            app.state.crowds = set()
            yield
        finally:
            for task in app.state.crowds:
                task.cancel()
            await asyncio.gather(*app.state.crowds, return_exceptions=True)
            await desk.close()

    app = FastAPI(title="sdlab checkin: airline seat check-in", lifespan=lifespan)

    def desk_of(request: Request) -> Desk:
        return request.app.state.desk

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(Conflict)
    async def conflict(request: Request, exc: Conflict) -> JSONResponse:
        content: dict[str, Any] = {"detail": str(exc)}
        if isinstance(exc, AlreadyCheckedIn) and exc.seat:
            content["seat"] = exc.seat
        return JSONResponse(status_code=409, content=content)

    @app.exception_handler(DatabaseUnavailable)
    @app.exception_handler(ConnectionLost)
    @app.exception_handler(PoolError)
    async def database_away(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": f"database unavailable: {exc}"})

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE, headers={"Cache-Control": "no-store"})

    @app.get("/trips")
    async def trips(request: Request) -> list[dict[str, Any]]:
        return [trip.as_dict() for trip in await desk_of(request).trips()]

    @app.get("/trips/{trip_id}/seats")
    async def seats(request: Request, trip_id: TripId) -> dict[str, Any]:
        desk = desk_of(request)
        held = await desk.seats(trip_id)
        taken = {seat: user for seat, user in held.items() if user is not None}
        return {
            "trip_id": trip_id,
            "seats": len(held),
            "free": len(held) - len(taken),
            "map": seatmap.render(taken, desk.layout),
            "taken": taken,
            "run": request.app.state.runs.get(trip_id),
        }

    @app.post("/trips/{trip_id}/checkin", status_code=201)
    async def checkin(request: Request, trip_id: TripId, body: CheckinRequest) -> dict[str, Any]:
        seat = await desk_of(request).checkin(trip_id, body.user_id, body.seat)
        return {"trip_id": trip_id, "user_id": body.user_id, "seat": seat}

    @app.post("/trips/{trip_id}/crowd", status_code=202)
    async def crowd(request: Request, trip_id: TripId, body: CrowdRequest) -> dict[str, Any]:
        desk = desk_of(request)
        runs: dict[int, dict[str, Any]] = request.app.state.runs
        if runs.get(trip_id, {}).get("state") == "running":
            raise CrowdRunning(f"a crowd is already checking in on trip {trip_id}")
        await desk.seats(trip_id)  # 404 for an unknown trip
        await desk.free_all(trip_id)
        run = {"strategy": NAMES[body.strategy], "users": body.users, "state": "running"}
        runs[trip_id] = run
        task = asyncio.create_task(_crowd(desk, trip_id, body, run))
        request.app.state.crowds.add(task)
        task.add_done_callback(request.app.state.crowds.discard)
        return {"trip_id": trip_id, **run}

    return app


async def _crowd(desk: Desk, trip_id: int, body: CrowdRequest, run: dict[str, Any]) -> None:
    """`body.users` passengers arriving at random over `body.spread` seconds."""
    passengers = [
        Passenger(user, trip_id, desk.db.transaction, arrives=random.uniform(0, body.spread))
        for user in range(1, body.users + 1)
    ]
    try:
        done = await book(body.strategy, passengers)
        seated = sum(1 for user in (await desk.seats(trip_id)).values() if user is not None)
        run.update(
            state="done", ms=round(done.ms, 1), told=done.told, seated=seated, retries=done.retries
        )
    except Exception as exc:  # the page shows it; the service goes on
        run.update(state="failed", detail=str(exc))
