"""A pooled session killed in the middle of a check-in: the server rolls it back, the
seat stays free, the pool replaces the session, and the next check-in succeeds."""

from __future__ import annotations

import asyncio

import pytest

from sdlab import sql
from sdlab.checkin import Desk
from tests.checkin.conftest import Plane
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(60)


async def waiting_session(look: sql.Session) -> int | None:
    """The id of the session of this database that waits to write a seat, if one does
    (the blocker's UPDATE is done; only the check-in's is running)."""
    if look.dialect.engine == "mariadb":
        # Not innodb_trx: it lists every database's transactions, and MariaDB refreshes
        # its copy only after 100 ms without a read, so a faster poll never sees a change.
        return await look.fetchval(
            "SELECT id FROM information_schema.processlist WHERE db = DATABASE() "
            "AND info LIKE 'UPDATE seats%' AND id <> CONNECTION_ID()"
        )
    return await look.fetchval(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock'"
    )


async def kill(look: sql.Session, session_id: int) -> None:
    if look.dialect.engine == "mariadb":
        await look.execute(f"KILL {int(session_id)}")
    else:
        await look.execute("SELECT pg_terminate_backend(%s)", (session_id,))


async def test_a_session_killed_mid_checkin_leaves_no_half_booked_seat(plane: Plane) -> None:
    async with await Desk.open(plane.url, max_size=2) as desk:
        # Another transaction holds user 7's place in UNIQUE (trip_id, user_id), not yet
        # committed: the check-in below locks seat 2C, writes it, and waits on that.
        blocker = await sql.connect(plane.url)
        try:
            await blocker.begin()
            await blocker.execute(
                "UPDATE seats SET user_id = 7 WHERE trip_id = %s AND name = '5F'",
                (plane.trip_id,),
            )
            checkin = asyncio.create_task(desk.checkin(plane.trip_id, 7, seat="2C"))

            async def victim() -> bool:
                return await waiting_session(plane.session) is not None

            assert await eventually(victim, True, timeout=10)
            await kill(plane.session, await waiting_session(plane.session))
            with pytest.raises(sql.ConnectionLost):
                await asyncio.wait_for(checkin, 10)
        finally:
            await blocker.close()  # its transaction rolls back with it

        assert (
            dict(
                await plane.session.fetch(
                    "SELECT name, user_id FROM seats WHERE trip_id = %s AND user_id IS NOT NULL",
                    (plane.trip_id,),
                )
            )
            == {}
        )
        # Seat 2C is not locked by a session that lingers; the pool has a live session.
        assert await desk.checkin(plane.trip_id, 7, seat="2C") == "2C"
        assert await desk.checkin(plane.trip_id, 8) == "1A"
