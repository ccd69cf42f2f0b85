"""The experiments, small, end to end."""

from __future__ import annotations

import pytest
from rich.progress import Progress

from sdlab.bench import Bench
from sdlab.infra.pytest_plugin import Endpoints
from sdlab.sharding.experiment import Move, Reads, Routing


async def test_routing_moves_and_skew() -> None:
    outcome = await Routing(keys=30_000).run(Bench({}, Progress()))
    rows = {row["router"]: row for row in outcome.rows}
    assert set(rows) == {"modulo", "range", "ring", "jump", "rendezvous"}
    assert rows["modulo"]["moved 2->3 (%)"] == pytest.approx(66.7, abs=2)
    assert rows["jump"]["moved 3->4 (%)"] == pytest.approx(25, abs=2)
    assert all(row["skew at 4 (max/mean)"] < 1.3 for row in rows.values())


@pytest.mark.slow
async def test_reads_through_the_router_and_spider(sdlab_endpoints: Endpoints) -> None:
    bench = Bench({"mysql": sdlab_endpoints["mysql"]}, Progress())
    outcome = await Reads(users=500, reads=100, scatters=5).run(bench)
    reads = [row["read"] for row in outcome.rows]
    assert "point read through the router" in reads
    assert "point read through Spider" in reads, outcome.notes
    assert not any("differs" in note for note in outcome.notes)
    assert any(note.startswith("Router overhead") for note in outcome.notes)


@pytest.mark.slow
async def test_moves_under_writes(sdlab_endpoints: Endpoints) -> None:
    bench = Bench({"mysql": sdlab_endpoints["mysql"]}, Progress())
    outcome = await Move(users=300, writers=2).run(bench)
    assert [row["move"] for row in outcome.rows] == ["2 -> 3 shards", "3 -> 2 shards"]
    for row in outcome.rows:
        assert row["writers failed"] == 0
        assert row["rows copied"] > 0
        assert row["writes"] > 0
