"""Fixtures of the hashtag tests: a scratch PostgreSQL database with the store's tables,
each broker, and a pipeline's topics on it (deleted afterwards)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sdlab import brokers, sql
from sdlab.brokers import Broker
from sdlab.hashtags.pipeline import Topics
from sdlab.hashtags.store import Store


@pytest.fixture
async def store(postgres_db: str) -> AsyncIterator[Store]:
    async with sql.Database(postgres_db, max_size=4) as db:
        s = Store(db)
        await s.create()
        yield s


@pytest.fixture(params=["kafka", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest) -> str:
    if request.param == "kafka":
        return "kafka://" + request.getfixturevalue("kafka_bootstrap")
    return str(request.getfixturevalue("rabbitmq_url"))


@pytest.fixture
async def broker(broker_url: str) -> AsyncIterator[Broker]:
    """Kafka groups here wait 2 s for a silent member (the crash tests kill them)."""
    b = await brokers.connect(broker_url, session_timeout=2)
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
async def topics(broker: Broker, namespace: str) -> AsyncIterator[Topics]:
    t = Topics(prefix=f"ht-{namespace}")
    await t.declare(broker)
    yield t
    await broker.delete(t.posts, groups=[t.extractor])
    await broker.delete(t.tagged, groups=[t.counter])
