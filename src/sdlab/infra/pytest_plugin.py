"""pytest fixtures that hand tests real servers from `sdlab.infra`.

Enable it in a `conftest.py`:  `pytest_plugins = ["sdlab.infra.pytest_plugin"]`

Session scope (each service is brought up the first time a test asks for it):
    sdlab_endpoints          lazy mapping: service name -> Endpoint
    mysql_url, postgres_url, redis_url, rabbitmq_url, kafka_bootstrap

Per test:
    unused_port              a loopback port nothing listens on
    namespace                a unique name for the test's databases, keys, queues, topics
    mysql_db, postgres_db    URL of a fresh database, dropped after the test
    mysql, postgres          an open async connection to that database
    redis                    an asyncio client; keys starting with `namespace` are deleted after
    rabbitmq                 an aio-pika robust connection
    servers                  extra private servers: `servers.mariadb(2)`, `servers.kafka()`,
                             ... stopped and removed after the test
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
import pytest_asyncio

from sdlab import infra, sql
from sdlab.infra.instance import Instance, Instances
from sdlab.infra.service import Endpoint
from sdlab.infra.services import kafka as kafka_service
from sdlab.infra.services import mariadb
from sdlab.infra.services import postgres as postgres_service
from sdlab.infra.services import rabbitmq as rabbitmq_service
from sdlab.infra.services import redis as redis_service


class Endpoints(Mapping[str, Endpoint]):
    """Brings a service up (`infra.up`) the first time a test needs it."""

    def __init__(self) -> None:
        self._found: dict[str, Endpoint] = {}

    def __getitem__(self, name: str) -> Endpoint:
        if name not in self._found:
            self._found.update(infra.up([name]))
        return self._found[name]

    def __iter__(self) -> Iterator[str]:
        return iter(infra.SERVICES)

    def __len__(self) -> int:
        return len(infra.SERVICES)


class Servers:
    """Extra private servers for one test; all closed when the test ends."""

    def __init__(self) -> None:
        self._started: list[Instance | Instances] = []

    def _keep(self, started: Any) -> Any:
        self._started.append(started)
        return started

    def mariadb(self, n: int = 1, *, options: Mapping[str, Any] | None = None) -> Instances:
        return self._keep(infra.mariadb(n, options=options))

    def postgres(self, n: int = 1, *, options: Mapping[str, Any] | None = None) -> Instances:
        return self._keep(infra.postgres(n, options=options))

    def redis(
        self, n: int = 1, *, durable: bool = False, options: Mapping[str, Any] | None = None
    ) -> Instances:
        return self._keep(infra.redis(n, durable=durable, options=options))

    def rabbitmq(self, *, options: Mapping[str, Any] | None = None) -> Instance:
        return self._keep(infra.rabbitmq(options=options))

    def kafka(self, *, options: Mapping[str, Any] | None = None) -> Instance:
        return self._keep(infra.kafka(options=options))

    def close(self) -> None:
        while self._started:
            self._started.pop().close()


@pytest.fixture(scope="session")
def sdlab_endpoints() -> Endpoints:
    return Endpoints()


@pytest.fixture(scope="session")
def mysql_url(sdlab_endpoints: Endpoints) -> str:
    return sdlab_endpoints["mysql"].url


@pytest.fixture(scope="session")
def postgres_url(sdlab_endpoints: Endpoints) -> str:
    return sdlab_endpoints["postgres"].url


@pytest.fixture(scope="session")
def redis_url(sdlab_endpoints: Endpoints) -> str:
    return sdlab_endpoints["redis"].url


@pytest.fixture(scope="session")
def rabbitmq_url(sdlab_endpoints: Endpoints) -> str:
    return sdlab_endpoints["rabbitmq"].url


@pytest.fixture(scope="session")
def kafka_bootstrap(sdlab_endpoints: Endpoints) -> str:
    """`host:port` of the Kafka-protocol broker, as aiokafka's bootstrap_servers."""
    return kafka_service.bootstrap_servers(sdlab_endpoints["kafka"].url)


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@asynccontextmanager
async def _database(server_url: str, name: str) -> AsyncIterator[str]:
    """The URL of database `name` on the server of `server_url`, created for the block
    and dropped after it."""
    url = await sql.ensure_database(sql.with_database(server_url, name))
    try:
        yield url
    finally:
        await sql.drop_database(url)


@pytest_asyncio.fixture
async def mysql_db(mysql_url: str, namespace: str) -> AsyncIterator[str]:
    async with _database(mysql_url, namespace) as url:
        yield url


@pytest_asyncio.fixture
async def mysql(mysql_db: str) -> AsyncIterator[Any]:
    conn = await mariadb.connect(mysql_db, autocommit=True)
    try:
        yield conn
    finally:
        await conn.ensure_closed()


@pytest_asyncio.fixture
async def postgres_db(postgres_url: str, namespace: str) -> AsyncIterator[str]:
    async with _database(postgres_url, namespace) as url:
        yield url


@pytest_asyncio.fixture
async def postgres(postgres_db: str) -> AsyncIterator[Any]:
    async with await postgres_service.connect(postgres_db, autocommit=True) as conn:
        yield conn


@pytest_asyncio.fixture
async def redis(redis_url: str, namespace: str) -> AsyncIterator[Any]:
    client = redis_service.connect(redis_url)
    try:
        yield client
        keys = [key async for key in client.scan_iter(match=f"{namespace}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest_asyncio.fixture
async def rabbitmq(rabbitmq_url: str) -> AsyncIterator[Any]:
    connection = await rabbitmq_service.connect(rabbitmq_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
def servers() -> Iterator[Servers]:
    started = Servers()
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on (for "the server is down" cases)."""
    import port_for

    return int(port_for.select_random())
