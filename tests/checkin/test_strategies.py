"""The strategies on real servers, many runs each: the locking ones seat exactly
min(passengers, seats) with nobody twice; without a lock, updates are lost."""

from __future__ import annotations

import pytest

from sdlab import sql
from sdlab.checkin import NotEnoughSessions, Passenger, Run, book, schema, seatmap, sessions
from sdlab.checkin.booking import free_seat_query
from sdlab.checkin.schema import free_all
from sdlab.checkin.strategies import NAMES, assigned, configure
from tests.checkin.conftest import SMALL, Plane

RUNS = 20
CROWDS = (36, 24)  # more passengers than the 30 seats, and fewer


async def runs(plane: Plane, strategy: str) -> list[tuple[int, Run, dict[str, int]]]:
    """`RUNS` runs of `strategy`, alternating the crowd's size, each on a freed plane:
    the crowd, the run, and the seats the database holds after it (seat -> user)."""
    done = []
    async with sessions(plane.url, max(CROWDS)) as own:
        for i in range(RUNS):
            crowd = CROWDS[i % len(CROWDS)]
            await free_all(plane.session, plane.trip_id)
            passengers = [
                Passenger(user, plane.trip_id, s.transaction)
                for user, s in zip(range(1, crowd + 1), own, strict=False)
            ]
            run = await book(strategy, passengers)
            done.append((crowd, run, await held(plane.session, plane.trip_id)))
    return done


async def held(session: sql.Session, trip_id: int) -> dict[str, int]:
    twice = await session.fetch(
        "SELECT user_id FROM seats WHERE trip_id = %s AND user_id IS NOT NULL "
        "GROUP BY user_id HAVING COUNT(*) > 1",
        (trip_id,),
    )
    assert twice == []
    return dict(
        await session.fetch(
            "SELECT name, user_id FROM seats WHERE trip_id = %s AND user_id IS NOT NULL",
            (trip_id,),
        )
    )


@pytest.mark.parametrize(
    "strategy", ["sequential", "for-update", "skip-locked", "window-lock", "window-skip"]
)
async def test_every_passenger_gets_a_seat_of_their_own(plane: Plane, strategy: str) -> None:
    seats = plane.layout.size
    for crowd, run, seated in await runs(plane, strategy):
        assert len(seated) == min(crowd, seats), f"{run.strategy}: {len(seated)} seats held"
        assert run.told == len(seated)
        for booking in run.bookings:  # what each was told is what the database holds
            if booking.seat is not None:
                assert seated[booking.seat] == booking.user_id
        if strategy.startswith("window"):
            windows = [s for s in seated if plane.layout.is_window(s)]
            assert len(windows) == min(crowd, 2 * plane.layout.rows)


async def test_without_a_lock_updates_are_lost(plane: Plane) -> None:
    lost = []
    for _crowd, run, seated in await runs(plane, "no-lock"):
        assert len(seated) <= run.told
        lost.append(run.told - len(seated))
        # Whoever was told a seat someone else holds lost it to a later write.
        overwritten = [b for b in run.bookings if b.seat and seated.get(b.seat) != b.user_id]
        assert len(overwritten) == run.told - len(seated)
    assert max(lost) > 0, "no update was lost in 20 runs"


async def test_the_seat_map_shows_who_is_seated(plane: Plane) -> None:
    async with sessions(plane.url, 8) as own:
        passengers = [Passenger(u, plane.trip_id, s.transaction) for u, s in enumerate(own, 1)]
        await book("sequential", passengers)
    lines = seatmap.render(await seatmap.taken_seats(plane.session, plane.trip_id), plane.layout)
    # Seats fill row by row: 1A to 1F, then 2A and 2B; a line of the map is one letter.
    assert lines == ["**xxx", "**xxx", "*xxxx", "*xxxx", "*xxxx", "*xxxx"]


async def test_more_sessions_than_the_server_allows_is_a_named_error(plane: Plane) -> None:
    probe = await sql.connect(plane.url)
    try:
        (limit,) = await probe.fetchone(
            "SELECT @@max_connections"
            if probe.dialect.engine == "mariadb"
            else "SELECT current_setting('max_connections')::int"
        )
    finally:
        await probe.close()
    with pytest.raises(NotEnoughSessions, match=f"{limit + 1} sessions are needed") as raised:
        async with sessions(plane.url, limit + 1):
            pass
    assert raised.value.limit == limit


def test_every_strategy_has_a_short_name() -> None:
    assert set(NAMES) == {
        "sequential",
        "no-lock",
        "for-update",
        "skip-locked",
        "window-lock",
        "window-skip",
    }


@pytest.mark.parametrize("strategy", ["for-update", "skip-locked"])
async def test_many_trips_over_a_small_pool_fill_every_seat(db_url: str, strategy: str) -> None:
    """Six trips at once, the passengers mixed, over four pooled sessions."""
    look = await sql.connect(db_url)
    try:
        await schema.create(look)
        await schema.add_users(look, 1, 30)
        trips = await schema.add_trips(look, 6, layout=SMALL)
        async with sql.Database(db_url, max_size=4, configure=configure) as db:
            crowd = [Passenger(u, t, db.transaction) for u in range(1, 31) for t in trips]
            run = await book(strategy, crowd)
        assert run.told == await assigned(look, trips) == 6 * 30
    finally:
        await look.close()


async def test_mariadb_reads_free_seats_through_the_primary_key(mysql_db: str) -> None:
    """Through the (trip_id, user_id) index, SKIP LOCKED on MariaDB passes over free
    seats on a busy index page (`booking.free_seat_query`); the plan must not use it."""
    look = await sql.connect(mysql_db)
    try:
        await schema.create(look)
        await schema.add_trips(look, 3, layout=SMALL)
        for lock in ("skip locked", "for update", "none"):
            plan = await look.fetch(
                "EXPLAIN " + free_seat_query("mariadb", lock, "AF"),
                (1, "A", "F"),  # type: ignore[arg-type]
            )
            assert [row[5] for row in plan] == ["PRIMARY"], plan  # the `key` column
    finally:
        await look.close()
