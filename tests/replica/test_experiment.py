"""The replica experiments, small, end to end."""

from __future__ import annotations

import pytest
from rich.progress import Progress

from sdlab.bench import Bench
from sdlab.replica.experiment import EXPERIMENTS, ReplicationLag


def test_every_experiment_is_registered_under_the_system() -> None:
    from sdlab import lab

    assert {cls.name for cls in lab.select(["replica"])} == {cls.name for cls in EXPERIMENTS}


@pytest.mark.slow
async def test_lag_is_measured() -> None:
    bench = Bench({}, Progress())
    lag = await ReplicationLag(seconds=0.5, rates=(200,), apply_threads=(4,)).run(bench)
    (row,) = lag.rows
    assert row["not seen"] == 0
    assert 0 < row["lag p50 (ms)"] <= row["lag p99 (ms)"]
    assert 50 < row["writes/s"] < 400
