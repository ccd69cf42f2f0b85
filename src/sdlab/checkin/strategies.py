"""The seed's four ways to seat passengers, and a fifth where each wants a window seat.

    async with sessions(url, 120) as own:                 # one connection per passenger
        passengers = [Passenger(user, trip, s.transaction) for user, s in zip(users, own)]
        run = await book(STRATEGIES["parallel, FOR UPDATE SKIP LOCKED"], passengers)

    sequential                 one passenger after another; nobody contends
    parallel, no lock          all at once; read a free seat, then write it: two passengers
                               read the same seat, both write it, the later one wins and
                               the other is told "you have 1A" while 1A is not theirs
    parallel, FOR UPDATE       all at once; everyone's read locks the first free seat, so
                               they queue on it, one after another, as if sequential
    parallel, FOR UPDATE SKIP LOCKED
                               all at once; a read passes over seats others hold, so each
                               takes a different seat and nobody waits
    window seat, pick and lock every passenger picks a free window seat (plain read), locks
                               it and takes it if still free, else picks again; once no
                               window is free, any seat (SKIP LOCKED)
    window seat, SKIP LOCKED   the first unlocked free window seat, else any seat

Each passenger's transaction comes from `Passenger.transaction`: the seed gives each its
own session (`sessions()`), the many-trips case a pool. Every strategy returns what each
passenger was told; `assigned()` counts what the database holds, which is how lost
updates show: told > assigned.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from time import perf_counter

from sdlab.checkin.booking import (
    FOR_UPDATE,
    NO_LOCK,
    RESCAN,
    SEAT_TAKEN,
    SKIP_LOCKED,
    CheckinError,
    Lock,
    SeatTaken,
    Transaction,
    Work,
    attempt,
    chosen,
    first_free,
    free_seat_query,
)
from sdlab.checkin.schema import PLANE, Layout
from sdlab.sql import Session, address_of, connect, engine_of

LOCK_WAIT_SECONDS = 5  # a lock wait past this is a LockWaitTimeout, retried


@dataclass(frozen=True)
class Passenger:
    user_id: int
    trip_id: int
    transaction: Transaction
    arrives: float = 0.0
    """Seconds after the start at which this passenger asks (0: at once, as the seed)."""


@dataclass(frozen=True)
class Booking:
    """What one passenger was told, and when (ms after the strategy started)."""

    user_id: int
    trip_id: int
    seat: str | None
    ms: float


@dataclass
class Run:
    """One strategy over a crowd of passengers."""

    strategy: str
    bookings: list[Booking]
    ms: float
    tally: Counter[str] = field(default_factory=Counter)
    """Retries by error name (Deadlock, LockWaitTimeout, ...), and SEAT_TAKEN conflicts."""

    @property
    def told(self) -> int:
        """Passengers told they have a seat."""
        return sum(b.seat is not None for b in self.bookings)

    @property
    def retries(self) -> int:
        return sum(n for key, n in self.tally.items() if key not in (SEAT_TAKEN, RESCAN))


Strategy = Callable[[Sequence[Passenger], Counter[str], float], Awaitable[list[Booking]]]


async def _one(
    passenger: Passenger, work: Work[str | None], tally: Counter[str], start: float
) -> Booking:
    await _arrival(passenger, start)
    seat = await attempt(passenger.transaction, work, tally=tally)
    return Booking(passenger.user_id, passenger.trip_id, seat, (perf_counter() - start) * 1000)


async def _arrival(passenger: Passenger, start: float) -> None:
    if passenger.arrives:
        await asyncio.sleep(max(0.0, start + passenger.arrives - perf_counter()))


async def sequential(
    passengers: Sequence[Passenger], tally: Counter[str], start: float
) -> list[Booking]:
    return [
        await _one(p, first_free(NO_LOCK, p.trip_id, p.user_id), tally, start) for p in passengers
    ]


def _parallel(lock: Lock) -> Strategy:
    async def strategy(
        passengers: Sequence[Passenger], tally: Counter[str], start: float
    ) -> list[Booking]:
        return list(
            await asyncio.gather(
                *(
                    _one(p, first_free(lock, p.trip_id, p.user_id, tally=tally), tally, start)
                    for p in passengers
                )
            )
        )

    return strategy


parallel_no_lock = _parallel(NO_LOCK)
parallel_for_update = _parallel(FOR_UPDATE)
parallel_skip_locked = _parallel(SKIP_LOCKED)


def window_pick_and_lock(layout: Layout = PLANE) -> Strategy:
    """Everyone wants a window: pick one from a plain read, lock it, take it if still free."""

    async def want_a_window(p: Passenger, tally: Counter[str], start: float) -> Booking:
        await _arrival(p, start)
        while True:
            async with p.transaction() as tx:  # a plain read: which window looks free
                looks_free = free_seat_query(tx.dialect.engine, NO_LOCK, layout.windows)
                row = await tx.fetchone(looks_free, (p.trip_id, *layout.windows))
            if row is None:
                return await _one(
                    p, first_free(SKIP_LOCKED, p.trip_id, p.user_id, tally=tally), tally, start
                )
            try:
                taken = await attempt(
                    p.transaction, chosen(p.trip_id, p.user_id, row[1]), tally=tally
                )
            except SeatTaken:
                tally[SEAT_TAKEN] += 1
                continue
            return Booking(p.user_id, p.trip_id, taken, (perf_counter() - start) * 1000)

    async def strategy(
        passengers: Sequence[Passenger], tally: Counter[str], start: float
    ) -> list[Booking]:
        return list(await asyncio.gather(*(want_a_window(p, tally, start) for p in passengers)))

    return strategy


def window_skip_locked(layout: Layout = PLANE) -> Strategy:
    """Everyone wants a window: the first unlocked free one, else any free seat."""

    async def want_a_window(p: Passenger, tally: Counter[str], start: float) -> Booking:
        window = first_free(SKIP_LOCKED, p.trip_id, p.user_id, windows=layout.windows, tally=tally)
        booked = await _one(p, window, tally, start)
        if booked.seat is not None:
            return booked
        return await _one(
            p, first_free(SKIP_LOCKED, p.trip_id, p.user_id, tally=tally), tally, start
        )

    async def strategy(
        passengers: Sequence[Passenger], tally: Counter[str], start: float
    ) -> list[Booking]:
        return list(await asyncio.gather(*(want_a_window(p, tally, start) for p in passengers)))

    return strategy


STRATEGIES: dict[str, Strategy] = {
    "sequential": sequential,
    "parallel, no lock": parallel_no_lock,
    "parallel, FOR UPDATE": parallel_for_update,
    "parallel, FOR UPDATE SKIP LOCKED": parallel_skip_locked,
}
WINDOW_STRATEGIES: dict[str, Strategy] = {
    "window seat, pick and lock": window_pick_and_lock(),
    "window seat, SKIP LOCKED": window_skip_locked(),
}
NAMES = {
    "sequential": "sequential",
    "no-lock": "parallel, no lock",
    "for-update": "parallel, FOR UPDATE",
    "skip-locked": "parallel, FOR UPDATE SKIP LOCKED",
    "window-lock": "window seat, pick and lock",
    "window-skip": "window seat, SKIP LOCKED",
}
"""Short names for the command line."""


def strategy(name: str) -> Strategy:
    """A strategy by its name (or short name)."""
    name = NAMES.get(name, name)
    every = {**STRATEGIES, **WINDOW_STRATEGIES}
    if name not in every:
        raise ValueError(f"no strategy {name!r}; there are: {', '.join(NAMES)}")
    return every[name]


async def book(name: str, passengers: Sequence[Passenger]) -> Run:
    """Run the strategy called `name` over `passengers`, all starting now."""
    tally: Counter[str] = Counter()
    start = perf_counter()
    bookings = await strategy(name)(passengers, tally, start)
    return Run(NAMES.get(name, name), bookings, (perf_counter() - start) * 1000, tally)


async def assigned(session: Session, trip_ids: Sequence[int]) -> int:
    """Seats of these trips that hold a user, as the database has them."""
    marks = ", ".join(["%s"] * len(trip_ids))
    return int(
        await session.fetchval(
            f"SELECT COUNT(*) FROM seats WHERE user_id IS NOT NULL AND trip_id IN ({marks})",
            list(trip_ids),
        )
    )


# -- one session per passenger ------------------------------------------------------


class NotEnoughSessions(CheckinError):
    """The server cannot hold one session per passenger at once."""

    def __init__(self, address: str, needed: int, limit: int, in_use: int) -> None:
        super().__init__(
            f"{address}: {needed} sessions are needed at once (one per passenger), but the "
            f"server allows {limit} (max_connections), {in_use} in use now. Use a server "
            "with a higher max_connections (sdlab's private PostgreSQL and MariaDB take "
            "200+), or fewer passengers"
        )
        self.needed, self.limit, self.in_use = needed, limit, in_use


async def capacity(session: Session) -> tuple[int, int]:
    """The server's max_connections and the sessions open on it now."""
    if session.dialect.engine == "mariadb":
        row = await session.fetchone(
            "SELECT @@max_connections, (SELECT COUNT(*) FROM information_schema.processlist)"
        )
    else:
        row = await session.fetchone(
            "SELECT current_setting('max_connections')::int, "
            "(SELECT COUNT(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
        )
    assert row is not None
    return int(row[0]), int(row[1])


async def check_capacity(url: str, needed: int) -> None:
    """`NotEnoughSessions` unless the server has room for `needed` more sessions."""
    probe = await connect(url)
    try:
        limit, in_use = await capacity(probe)
    finally:
        await probe.close()
    # The probe counted itself; it is closed before the passengers connect.
    if needed > limit - (in_use - 1):
        raise NotEnoughSessions(address_of(url), needed, limit, in_use - 1)


async def configure(session: Session) -> None:
    """The lock-wait limit every check-in session runs with (also for pools)."""
    if session.dialect.engine == "mariadb":
        await session.run(f"SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT_SECONDS}")
    else:
        await session.run(f"SET lock_timeout = '{LOCK_WAIT_SECONDS}s'")


@asynccontextmanager
async def sessions(url: str, count: int, *, connecting: int = 16) -> AsyncIterator[list[Session]]:
    """`count` sessions of their own (not pooled), opened `connecting` at a time after a
    capacity check; all closed after the block."""
    if engine_of(url) not in ("mariadb", "postgresql"):
        raise ValueError("check-in runs on MariaDB or PostgreSQL")
    await check_capacity(url, count)
    gate = asyncio.Semaphore(connecting)

    async def open_one() -> Session:
        async with gate:
            session = await connect(url)
            await configure(session)
            return session

    opened = await asyncio.gather(*(open_one() for _ in range(count)), return_exceptions=True)
    own = [s for s in opened if isinstance(s, Session)]
    try:
        failed = [e for e in opened if isinstance(e, BaseException)]
        if failed:
            raise failed[0]
        yield own
    finally:
        await asyncio.gather(*(s.close() for s in own))
