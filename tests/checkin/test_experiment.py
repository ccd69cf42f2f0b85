"""The experiments, small, end to end on the real servers."""

from __future__ import annotations

import pytest
from rich.progress import Progress

from sdlab.bench import Bench
from sdlab.checkin.experiment import ManyTrips, SeedTable, WindowSeat
from sdlab.checkin.strategies import STRATEGIES
from sdlab.infra.pytest_plugin import Endpoints

pytestmark = pytest.mark.slow


def bench(endpoints: Endpoints) -> Bench:
    return Bench({name: endpoints[name] for name in ("mysql", "postgres")}, Progress())


async def test_the_seed_table_beside_the_seeds_figures(sdlab_endpoints: Endpoints) -> None:
    outcome = await SeedTable(users=30, runs=1).run(bench(sdlab_endpoints))
    assert [r["strategy"] for r in outcome.rows] == [*STRATEGIES] * 2
    assert [r["server"].split()[0] for r in outcome.rows] == ["MariaDB"] * 4 + ["PostgreSQL"] * 4
    for row in outcome.rows:
        assert row["seed (ms)"] is not None
        if row["strategy"] == "parallel, no lock":
            assert row["seats assigned"] <= row["told a seat"] == 30
        else:
            assert row["seats assigned"] == 30
    assert outcome.published is not None
    assert outcome.published.key == "airline-checkin"
    assert sum("```" in note for note in outcome.notes) == 8  # a seat map per row


async def test_many_trips_and_the_window_seat(sdlab_endpoints: Endpoints) -> None:
    trips = await ManyTrips(trips=2, users=30, pool=4).run(bench(sdlab_endpoints))
    assert {row["order"] for row in trips.rows} == {"mixed", "by trip"}
    for row in trips.rows:
        assert row["passengers"] == 60
        assert row["p50 to a seat (ms)"] <= row["p99 to a seat (ms)"]
        if row["strategy"] != "parallel, no lock":
            assert row["seats assigned"] == 60
    window = await WindowSeat(users=30, runs=1).run(bench(sdlab_endpoints))
    for row in window.rows:
        assert row["seats assigned"] == 30
        if row["strategy"].startswith("window"):  # 40 windows: every one of the 30 gets one
            assert row["window seats"] == 30
