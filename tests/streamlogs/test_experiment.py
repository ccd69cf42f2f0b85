"""The benchmark, small, end to end: real server processes, a client process."""

from __future__ import annotations

import pytest
from rich.progress import Progress

from sdlab.bench import Bench
from sdlab.streamlogs.experiment import FreshLineLatency, QuietWatchers


@pytest.mark.slow
async def test_both_designs_deliver_every_line_to_every_client() -> None:
    experiment = FreshLineLatency(clients=(20,), lines=4, interval=0.05, drain=10)
    (row,) = (await experiment.run(Bench({}, Progress()))).rows
    assert row["clients"] == 20
    assert row["seed missing (%)"] == row["sdlab missing (%)"] == 0
    assert 0 < row["sdlab p50 (ms)"] <= row["sdlab p99 (ms)"]
    assert row["sdlab KiB per client"] > 0


@pytest.mark.slow
async def test_the_floor_is_measured_beside_sdlab() -> None:
    """A floor row at the same client count: every line delivered, sdlab's percentiles
    as ratios to it, the clients' CPU beside the server's (no timing asserted)."""
    experiment = FreshLineLatency(clients=(20, 30), seed_clients=20, lines=4, interval=0.05)
    outcome = await experiment.run(Bench({}, Progress()))
    first, second = outcome.rows
    assert first["seed p99 (ms)"] > 0
    assert second["seed p99 (ms)"] is None  # beyond seed_clients
    for row in outcome.rows:
        assert row["floor missing (%)"] == row["sdlab missing (%)"] == 0
        assert 0 < row["floor p50 (ms)"] <= row["floor p99 (ms)"]
        assert row["sdlab p99 / floor"] == pytest.approx(
            row["sdlab p99 (ms)"] / row["floor p99 (ms)"]
        )
        assert row["sdlab p50 / floor"] > 0
        assert row["floor client CPU (%)"] >= 0  # psutil counts in 10 ms ticks
        assert row["sdlab client CPU (%)"] >= 0
        assert row["floor server CPU (%)"] >= 0
    headline = experiment.headline(outcome.rows)
    assert headline is not None
    assert headline.value == second["sdlab p99 / floor"]


@pytest.mark.slow
async def test_quiet_clients_starve_the_original_only() -> None:
    """40 clients on a deployment that prints nothing hold the thread pool's 40 threads:
    the original delivers nothing to the busy deployment's clients; sdlab everything."""
    experiment = QuietWatchers(idle=(40,), clients=5, lines=3, interval=0.05, drain=1)
    (row,) = (await experiment.run(Bench({}, Progress()))).rows
    assert row["seed missing (%)"] == 100
    assert row["sdlab missing (%)"] == 0
