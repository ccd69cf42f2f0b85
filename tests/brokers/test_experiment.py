"""The throughput benchmark, small, end to end."""

from __future__ import annotations

import pytest
from aiormq.abc import DeliveredMessage
from rich.progress import Progress

from sdlab.bench import Bench
from sdlab.brokers import Rabbit
from sdlab.brokers.experiment import BODY, CONTENDERS, BrokerThroughput, raw_aio_pika
from sdlab.infra.pytest_plugin import Endpoints


@pytest.mark.slow
async def test_every_layer_and_its_bare_peer_is_measured(sdlab_endpoints: Endpoints) -> None:
    endpoints = {name: sdlab_endpoints[name] for name in BrokerThroughput.services}
    experiment = BrokerThroughput(rabbit_messages=300, kafka_messages=200, rounds=1)
    outcome = await experiment.run(Bench(endpoints, Progress()))
    assert [row["layer"] for row in outcome.rows] == [layer for _, layer, _, _ in CONTENDERS]
    for row in outcome.rows:
        assert row["best msgs/s"] > 0
        assert row["best / bare"] > 0
    bare = [row for row in outcome.rows if "bare loop" in row["layer"]]
    assert [row["best / bare"] for row in bare] == [1.0, 1.0]


async def test_the_bare_rabbitmq_loop_publishes_mandatory_as_ours(
    rabbitmq_url: str, namespace: str
) -> None:
    """The same work as sdlab's publishes: a message no queue took comes back to the bare
    loop too (aio-pika's default, spelled out in the benchmark so that it stays so)."""
    name = f"{namespace}.bare"
    async with raw_aio_pika(rabbitmq_url, name, 1) as pipe:
        async with await Rabbit.connect(rabbitmq_url) as rabbit:
            await rabbit.delete_queue(name)
        assert isinstance(await pipe.publish(BODY), DeliveredMessage)  # returned
