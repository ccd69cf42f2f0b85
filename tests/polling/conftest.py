"""Fixtures of the polling tests: a fresh database of each kind, and fleets on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from sdlab.polling import Delays, Fleet, Store

OpenFleet = Callable[..., Awaitable[Fleet]]

# Creations that move along quickly, so tests see them finish.
QUICK = Delays(to_do=0.05, in_progress=0.05)


@pytest.fixture(params=["mariadb", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A fresh database: MariaDB (announced on Redis) or PostgreSQL (LISTEN/NOTIFY)."""
    return str(request.getfixturevalue("mysql_db" if request.param == "mariadb" else "postgres_db"))


@pytest.fixture
async def open_fleet(db_url: str, redis_url: str) -> AsyncIterator[OpenFleet]:
    """`await open_fleet(**Fleet.open options)`: a started fleet on the test's database;
    every one is closed after the test. Each is one "process" of the service."""
    opened: list[Fleet] = []

    async def open_one(**options: Any) -> Fleet:
        options.setdefault("delays", QUICK)
        fleet = await Fleet.open(db_url, redis_url=redis_url, **options)
        await fleet.start()
        opened.append(fleet)
        return fleet

    yield open_one
    for fleet in opened:
        await fleet.close()


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    async with await Store.connect(db_url) as opened:
        yield opened
