"""Fixtures of the check-in tests: a fresh database of each engine with the tables, users
and one small trip (5 rows of 6: 30 seats, so that tests hold few sessions)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from sdlab import sql
from sdlab.checkin import Layout, schema

SMALL = Layout(rows=5)
USERS = 40


@pytest.fixture(params=["mysql", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A scratch database on each engine (dropped after the test)."""
    return str(request.getfixturevalue(f"{request.param}_db"))


@dataclass
class Plane:
    url: str
    session: sql.Session
    trip_id: int
    layout: Layout


@pytest.fixture
async def plane(db_url: str) -> AsyncIterator[Plane]:
    """The tables, users 1 to 40, and one trip of 30 seats; a session to look with."""
    session = await sql.connect(db_url)
    try:
        await schema.create(session)
        await schema.add_users(session, 1, USERS)
        (trip_id,) = await schema.add_trips(session, 1, layout=SMALL)
        yield Plane(db_url, session, trip_id, SMALL)
    finally:
        await session.close()
