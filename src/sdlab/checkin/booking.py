"""One passenger's check-in: the transaction that takes a seat, and its named errors.

    seat = await attempt(session.transaction, first_free(SKIP_LOCKED, trip, user), ...)

A check-in reads a free seat and writes its `user_id`, in one transaction. How the read
locks is the whole difference between the strategies (`strategies.py`):

    NO_LOCK      SELECT ... LIMIT 1                         two users read the same seat;
                 UPDATE seats SET user_id = me WHERE id = s  the later overwrites the first
    FOR_UPDATE   SELECT ... LIMIT 1 FOR UPDATE               everyone queues on that seat
    SKIP_LOCKED  SELECT ... LIMIT 1 FOR UPDATE SKIP LOCKED   each takes the next unlocked one

Retries (`attempt`): a deadlock, a serialization failure or a lock-wait timeout rolls the
whole transaction back and runs it again, at most `attempts` times, counted by the
error's name. On PostgreSQL any of the three has already failed the transaction. On
MariaDB a lock-wait timeout (1205) rolls back only the statement and leaves the
transaction open with its earlier locks: going on would keep those locks and risk
committing half a check-in, so we roll back the whole of it too, the same on both engines.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Literal, TypeVar

from sdlab.sql import Deadlock, DuplicateKey, LockWaitTimeout, SerializationFailure, Session

T = TypeVar("T")
Transaction = Callable[[], AbstractAsyncContextManager[Session]]
"""Where a check-in's transaction comes from: `session.transaction` (a passenger's own
connection) or `database.transaction` (a pooled one)."""
Work = Callable[[Session], Awaitable[T]]

Lock = Literal["none", "for update", "skip locked"]
NO_LOCK: Lock = "none"
FOR_UPDATE: Lock = "for update"
SKIP_LOCKED: Lock = "skip locked"
_LOCKING = {NO_LOCK: "", FOR_UPDATE: " FOR UPDATE", SKIP_LOCKED: " FOR UPDATE SKIP LOCKED"}

RETRIED = (Deadlock, SerializationFailure, LockWaitTimeout)
# The tally's keys besides the retried errors' names:
SEAT_TAKEN = "seat taken"  # a chosen seat someone else got first
RESCAN = "rescan"  # SKIP LOCKED found no seat while some were free (all locked then)


class CheckinError(Exception):
    """A check-in that cannot be done as asked."""


class NotFound(CheckinError):
    """No such trip, user or seat."""


class UnknownTrip(NotFound):
    pass


class UnknownUser(NotFound):
    pass


class UnknownSeat(NotFound):
    pass


class Conflict(CheckinError):
    """The plane says no: full, the seat taken, or the user already seated."""


class TripFull(Conflict):
    pass


class SeatTaken(Conflict):
    pass


class AlreadyCheckedIn(Conflict):
    def __init__(self, message: str, seat: str) -> None:
        super().__init__(message)
        self.seat = seat


async def attempt(
    transaction: Transaction, work: Work[T], *, tally: Counter[str], attempts: int = 10
) -> T:
    """`await work(tx)` in a transaction; again in a new one (with jittered backoff)
    after a deadlock, serialization failure or lock-wait timeout, at most `attempts`
    times in all. Each retry is counted in `tally` under the error's name."""
    for n in range(1, attempts + 1):
        try:
            async with transaction() as tx:
                return await work(tx)
        except RETRIED as exc:
            if n == attempts:
                raise
            tally[type(exc).__name__] += 1
        await asyncio.sleep(random.uniform(0, 0.001 * 2**n))
    raise AssertionError("unreachable")


def free_seat_query(engine: str, lock: Lock, windows: str = "") -> str:
    """The read of the first free seat of a trip (parameters: the trip, then the window
    letters), locking as `lock` says.

    MariaDB reads through the primary key (trip_id, id), where a row's lock is known
    exactly. Through the secondary index (trip_id, user_id) InnoDB cannot tell whether a
    row is locked and takes it for locked whenever a live transaction changed its index
    page: SKIP LOCKED then passed over free seats for seconds (50 trips over a pool of
    20: 573 of 600 seats in 11 s, against 600 in 0.5 s through the primary key)."""
    index = " FORCE INDEX (PRIMARY)" if engine == "mariadb" else ""
    where = "trip_id = %s AND user_id IS NULL"
    if windows:
        where += f" AND RIGHT(name, 1) IN ({', '.join(['%s'] * len(windows))})"
    return f"SELECT id, name FROM seats{index} WHERE {where} ORDER BY id LIMIT 1{_LOCKING[lock]}"


def first_free(
    lock: Lock,
    trip_id: int,
    user_id: int,
    *,
    windows: str = "",
    tally: Counter[str] | None = None,
    patience: float = 5.0,
) -> Work[str | None]:
    """Take the first free seat (a window seat, if `windows` names the letters); its
    name, or None if there is none.

    SKIP LOCKED passes over every row someone holds a lock on, even for a moment: on
    MariaDB a scan that checks a row against a condition the index cannot answer
    (a window seat) locks it while it looks. So "nothing found" is not "nothing free":
    a plain read then says whether free seats remain, and if so the read runs again
    (counted in `tally` as RESCAN) until one is found, none is free, or `patience`
    seconds pass."""
    params = [trip_id, *windows]

    async def work(tx: Session) -> str | None:
        select = free_seat_query(tx.dialect.engine, lock, windows)
        anything_free = free_seat_query(tx.dialect.engine, NO_LOCK, windows)
        deadline = asyncio.get_running_loop().time() + patience
        while (row := await tx.fetchone(select, params)) is None:
            if lock != SKIP_LOCKED or asyncio.get_running_loop().time() > deadline:
                return None
            if not await tx.fetchone(anything_free, params):
                return None  # READ COMMITTED: this statement sees the latest commits
            if tally is not None:
                tally[RESCAN] += 1
            await asyncio.sleep(0.001)
        # Without a lock this writes over whoever took the seat since the read.
        await tx.execute("UPDATE seats SET user_id = %s WHERE id = %s", (user_id, row[0]))
        return str(row[1])

    return work


def chosen(trip_id: int, user_id: int, seat: str) -> Work[str]:
    """Take the seat called `seat`, locking it first: `SeatTaken` if someone has it,
    `UnknownSeat` if the trip has no such seat."""

    async def work(tx: Session) -> str:
        row = await tx.fetchone(
            "SELECT id, user_id FROM seats WHERE trip_id = %s AND name = %s FOR UPDATE",
            (trip_id, seat),
        )
        if row is None:
            raise UnknownSeat(f"trip {trip_id} has no seat {seat}")
        if row[1] is not None:
            raise SeatTaken(f"seat {seat} on trip {trip_id} is taken")
        await tx.execute("UPDATE seats SET user_id = %s WHERE id = %s", (user_id, row[0]))
        return seat

    return work


def checkin(trip_id: int, user_id: int, seat: str | None = None) -> Work[str]:
    """The whole check-in a desk does: the trip and the user must exist, the user must
    not hold a seat yet; then the chosen seat, or the first free one (SKIP LOCKED)."""

    async def work(tx: Session) -> str:
        if await tx.fetchone("SELECT 1 FROM trips WHERE id = %s", (trip_id,)) is None:
            raise UnknownTrip(f"no trip {trip_id}")
        if await tx.fetchone("SELECT 1 FROM users WHERE id = %s", (user_id,)) is None:
            raise UnknownUser(f"no user {user_id}")
        held = await tx.fetchval(
            "SELECT name FROM seats WHERE trip_id = %s AND user_id = %s", (trip_id, user_id)
        )
        if held is not None:
            raise AlreadyCheckedIn(f"user {user_id} already has seat {held}", held)
        try:
            if seat is not None:
                return await chosen(trip_id, user_id, seat)(tx)
            taken = await first_free(SKIP_LOCKED, trip_id, user_id)(tx)
        except DuplicateKey:  # the same user, checking in twice at once
            raise AlreadyCheckedIn(f"user {user_id} is checking in already", "") from None
        if taken is None:
            raise TripFull(f"trip {trip_id} has no free seat")
        return taken

    return work
