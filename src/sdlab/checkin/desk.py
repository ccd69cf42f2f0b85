"""Check-in over a pool, as the service does it: trips, seat maps, one check-in at a time.

    async with await Desk.open("postgresql://postgres@127.0.0.1:5432/sdlab_checkin") as desk:
        await desk.seed()                              # the demo airline, if the db is empty
        seat = await desk.checkin(trip_id=1, user_id=7)            # first free: "1A"
        seat = await desk.checkin(trip_id=1, user_id=8, seat="12C")

A check-in is `booking.checkin` in a pooled transaction: SKIP LOCKED for "any seat",
FOR UPDATE on the one seat asked for, retried on deadlocks and lock-wait timeouts
(counted in `tally`). A session killed mid-check-in is rolled back by the server, so
the seat stays free; the pool replaces the session, and the caller gets `ConnectionLost`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Self

from sdlab.checkin import schema, seatmap
from sdlab.checkin.booking import UnknownTrip, attempt, checkin
from sdlab.checkin.schema import PLANE, Layout
from sdlab.checkin.strategies import configure
from sdlab.sql import Database, ensure_database


@dataclass(frozen=True)
class Trip:
    id: int
    name: str
    flight: str
    airline: str
    seats: int
    free: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "flight": self.flight,
            "airline": self.airline,
            "seats": self.seats,
            "free": self.free,
        }


class Desk:
    """The check-in desk of one database (tables created on `open`)."""

    def __init__(self, db: Database, layout: Layout = PLANE) -> None:
        self.db = db
        self.layout = layout
        self.tally: Counter[str] = Counter()
        """Check-ins run again, by the error's name."""

    @classmethod
    async def open(cls, url: str, *, max_size: int = 20, default: str = "sdlab_checkin") -> Self:
        """A desk on `url` (its database created if missing; a URL without one uses
        `default`), with a pool of `max_size` sessions."""
        url = await ensure_database(url, default=default)
        db = await Database(url, max_size=max_size, configure=configure).open()
        try:
            async with db.session() as session:
                await schema.create(session)
        except BaseException:
            await db.close()
            raise
        return cls(db)

    async def close(self) -> None:
        await self.db.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def seed(self) -> bool:
        """The demo airline, flights, trips and users, if the database has no trips."""
        async with self.db.session() as session:
            return await schema.seed_demo(session)

    async def trips(self) -> list[Trip]:
        rows = await self.db.fetch(
            "SELECT t.id, t.name, f.number, a.name, COUNT(s.id), COUNT(s.id) - COUNT(s.user_id)"
            " FROM trips t JOIN flights f ON f.id = t.flight_id"
            " JOIN airlines a ON a.id = f.airline_id LEFT JOIN seats s ON s.trip_id = t.id"
            " GROUP BY t.id, t.name, f.number, a.name ORDER BY t.id"
        )
        return [Trip(int(i), n, fl, a, int(s), int(f)) for i, n, fl, a, s, f in rows]

    async def seats(self, trip_id: int) -> dict[str, int | None]:
        """Every seat of the trip and its user (None: free), in seat order."""
        rows = await self.db.fetch(
            "SELECT name, user_id FROM seats WHERE trip_id = %s ORDER BY id", (trip_id,)
        )
        if not rows and not await self.db.fetchone("SELECT 1 FROM trips WHERE id = %s", (trip_id,)):
            raise UnknownTrip(f"no trip {trip_id}")
        return {str(name): user for name, user in rows}

    async def seat_map(self, trip_id: int) -> list[str]:
        seats = await self.seats(trip_id)
        return seatmap.render([s for s, user in seats.items() if user is not None], self.layout)

    async def checkin(self, trip_id: int, user_id: int, seat: str | None = None) -> str:
        """Seat `user_id` on `trip_id` (in `seat`, if given); the seat's name. Raises
        `UnknownTrip`, `UnknownUser`, `UnknownSeat`, `TripFull`, `SeatTaken`,
        `AlreadyCheckedIn`."""
        return await attempt(self.db.transaction, checkin(trip_id, user_id, seat), tally=self.tally)

    async def free_all(self, trip_id: int) -> None:
        async with self.db.session() as session:
            await schema.free_all(session, trip_id)
