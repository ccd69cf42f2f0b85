"""RabbitMQ: connect, probe, and run private brokers (a node of their own each)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aio_pika
import port_for

from sdlab.infra.service import Launch, Service, find_program


async def connect(url: str, **kwargs: Any) -> aio_pika.abc.AbstractRobustConnection:
    """An aio-pika robust connection (it reconnects after a broker restart)."""
    return await aio_pika.connect_robust(url, **kwargs)


class RabbitMQ(Service):
    name = "rabbitmq"
    title = "RabbitMQ"
    default_port = 5672
    debian_package = "rabbitmq-server"
    start_timeout = 60.0

    def url_for(self, host: str, port: int) -> str:
        return f"amqp://guest:guest@{host}:{port}/"

    async def probe(self, url: str) -> str:
        conn = await aio_pika.connect(url, timeout=3)
        try:
            assert conn.transport is not None
            properties = conn.transport.connection.server_properties
            return _text(properties.get("version", "")) or "AMQP 0-9-1"
        finally:
            await conn.close()

    def prepare(self, datadir: Path, log: Path, *, user: str | None) -> None:
        datadir.mkdir(parents=True)
        (datadir / "rabbitmq.conf").write_text("loopback_users = none\n")
        (datadir / "enabled_plugins").write_text("[].\n")
        (datadir / "rabbitmq-env.conf").write_text("")  # ignore /etc/rabbitmq/rabbitmq-env.conf

    def programs(self) -> list[str]:
        # The Debian wrapper in /usr/sbin switches to the rabbitmq user and drops our
        # environment, so prefer the real script it wraps.
        wrapped = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
        if wrapped.exists():
            return [str(wrapped)]
        return [find_program("rabbitmq-server", package=self.debian_package)]

    def launch(self, datadir: Path, port: int, options: Mapping[str, Any]) -> Launch:
        env = {
            "RABBITMQ_NODENAME": f"sdlab-{port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(port),
            "RABBITMQ_DIST_PORT": str(port_for.select_random()),
            "RABBITMQ_MNESIA_BASE": str(datadir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(datadir / "log"),
            "RABBITMQ_LOGS": "-",  # to stdout, into the instance's log file
            "RABBITMQ_CONFIG_FILE": str(datadir / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(datadir / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(datadir / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(datadir / "rabbitmq.pid"),
        }
        env.update({key: str(value) for key, value in options.items()})
        return Launch(self.programs(), env=env)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
