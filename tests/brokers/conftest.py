"""Fixtures for the brokers' tests: a connection, and clean-up of what a test declared."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import pytest_asyncio

from sdlab.brokers import Rabbit, delete_topic
from tests.helpers import Proxy


class Made:
    """Queues, exchanges and Kafka topics a test declared, deleted when it ends (the
    brokers are shared: nothing else is touched)."""

    def __init__(self) -> None:
        self.queues: list[str] = []
        self.exchanges: list[str] = []
        self.topics: list[str] = []

    def queue(self, name: str) -> str:
        self.queues.append(name)
        return name

    def exchange(self, name: str) -> str:
        self.exchanges.append(name)
        return name

    def topic(self, name: str) -> str:
        self.topics.append(name)
        return name


@pytest_asyncio.fixture
async def made(rabbitmq_url: str, sdlab_endpoints: object) -> AsyncIterator[Made]:
    made = Made()
    yield made
    if made.queues or made.exchanges:
        async with await Rabbit.connect(rabbitmq_url) as rabbit:
            for queue in made.queues:
                await rabbit.delete_queue(queue)
            for exchange in made.exchanges:
                await rabbit.delete_exchange(exchange)
    if made.topics:
        from sdlab.infra.services.kafka import bootstrap_servers

        bootstrap = bootstrap_servers(sdlab_endpoints["kafka"].url)  # type: ignore[index]
        for topic in made.topics:
            await delete_topic(bootstrap, topic)


@pytest_asyncio.fixture
async def rabbit(rabbitmq_url: str) -> AsyncIterator[Rabbit]:
    async with await Rabbit.connect(rabbitmq_url) as connection:
        yield connection


@asynccontextmanager
async def proxied(url: str) -> AsyncIterator[tuple[Proxy, str]]:
    """A TCP proxy in front of the RabbitMQ at `url` (on this machine), and the URL that
    goes through it: `proxy.cut()` drops its connections, as a network failure would."""
    parts = urlsplit(url)
    async with Proxy(parts.port or 5672) as proxy:
        netloc = f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}"
        yield proxy, parts._replace(netloc=netloc).geturl()
