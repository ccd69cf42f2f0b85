"""The throughput benchmark, small, end to end."""

from __future__ import annotations

import pytest
from rich.progress import Progress

from sdlab.bench import Bench
from sdlab.brokers.experiment import CONTENDERS, BrokerThroughput
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
