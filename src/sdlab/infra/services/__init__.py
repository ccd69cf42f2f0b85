"""The backing services sdlab knows, one module each, and their catalog by name."""

from __future__ import annotations

from sdlab.infra.service import Service
from sdlab.infra.services.kafka import Kafka
from sdlab.infra.services.mariadb import MariaDB
from sdlab.infra.services.postgres import PostgreSQL
from sdlab.infra.services.rabbitmq import RabbitMQ
from sdlab.infra.services.redis import Redis

SERVICES: dict[str, Service] = {
    kind.name: kind for kind in (MariaDB(), PostgreSQL(), Redis(), RabbitMQ(), Kafka())
}


def service(name: str) -> Service:
    """The service called `name` (mysql, postgres, redis, rabbitmq, kafka)."""
    try:
        return SERVICES[name]
    except KeyError:
        known = ", ".join(SERVICES)
        raise ValueError(f"unknown service {name!r}; known services: {known}") from None
