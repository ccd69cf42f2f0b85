"""Backing services: find a running one, or start a private one.

    from sdlab import infra

    infra.up()                         # every service reachable, or an error saying why
    url = infra.endpoint("mysql").url  # where MariaDB answers now
    with infra.mariadb(2) as servers:  # two extra private MariaDB servers
        ...

See `resolve` for the order in which services are looked for, `instance` for the
life of a private server, `private` for starting extra ones, and `process` for running
one of sdlab's own servers (`sdlab kv serve`, ...) in a process of its own.
"""

from sdlab.infra.errors import BinaryNotFound, InfraError, ServiceUnreachable, StartFailed
from sdlab.infra.instance import Instance, Instances
from sdlab.infra.private import kafka, kept, mariadb, postgres, rabbitmq, redis, release
from sdlab.infra.process import ProcessFailed, ServerProcess, sdlab_command
from sdlab.infra.resolve import Health, down, endpoint, status, up
from sdlab.infra.service import Endpoint, Service
from sdlab.infra.services import SERVICES, service

__all__ = [
    "SERVICES",
    "BinaryNotFound",
    "Endpoint",
    "Health",
    "InfraError",
    "Instance",
    "Instances",
    "ProcessFailed",
    "ServerProcess",
    "Service",
    "ServiceUnreachable",
    "StartFailed",
    "down",
    "endpoint",
    "kafka",
    "kept",
    "mariadb",
    "postgres",
    "rabbitmq",
    "redis",
    "release",
    "sdlab_command",
    "service",
    "status",
    "up",
]
