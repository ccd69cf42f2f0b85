"""Fixtures of the hashtag tests: a scratch PostgreSQL database with the store's tables."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sdlab import sql
from sdlab.hashtags.store import Store


@pytest.fixture
async def store(postgres_db: str) -> AsyncIterator[Store]:
    async with sql.Database(postgres_db, max_size=4) as db:
        s = Store(db)
        await s.create()
        yield s
