"""Airline seat check-in under contention: 120 passengers, 120 seats, all at once.

    from sdlab.checkin import Passenger, book, schema, sessions

    async with sessions(url, 120) as own:        # one connection per passenger, as the seed
        passengers = [Passenger(user, trip, s.transaction) for user, s in zip(users, own)]
        run = await book("skip-locked", passengers)

`schema.py` holds the tables and the demo's rows; `booking.py` one check-in's transaction,
its retries and named errors; `strategies.py` the seed's four strategies and the window
seat case; `seatmap.py` the `*`/`x` map; `desk.py` check-in over a pool, as the service
does it; `service.py` the HTTP API and its live page.
"""

from sdlab.checkin.booking import (
    AlreadyCheckedIn,
    CheckinError,
    Conflict,
    NotFound,
    SeatTaken,
    TripFull,
    UnknownSeat,
    UnknownTrip,
    UnknownUser,
)
from sdlab.checkin.desk import Desk, Trip
from sdlab.checkin.schema import PLANE, Layout
from sdlab.checkin.strategies import (
    NAMES,
    STRATEGIES,
    WINDOW_STRATEGIES,
    Booking,
    NotEnoughSessions,
    Passenger,
    Run,
    book,
    sessions,
)

__all__ = [
    "NAMES",
    "PLANE",
    "STRATEGIES",
    "WINDOW_STRATEGIES",
    "AlreadyCheckedIn",
    "Booking",
    "CheckinError",
    "Conflict",
    "Desk",
    "Layout",
    "NotEnoughSessions",
    "NotFound",
    "Passenger",
    "Run",
    "SeatTaken",
    "Trip",
    "TripFull",
    "UnknownSeat",
    "UnknownTrip",
    "UnknownUser",
    "book",
    "sessions",
]
