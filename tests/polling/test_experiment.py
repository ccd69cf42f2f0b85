"""The experiment, small, end to end: real service and client processes."""

from __future__ import annotations

import pytest
from rich.progress import Progress

from sdlab.bench import Bench
from sdlab.infra.pytest_plugin import Endpoints
from sdlab.polling.experiment import STATUSES_PER_CREATION, ShortVsLong, detection

pytestmark = pytest.mark.slow


async def test_short_and_long_polling_are_measured(sdlab_endpoints: Endpoints) -> None:
    endpoints = {name: sdlab_endpoints[name] for name in ShortVsLong.services}
    experiment = ShortVsLong(
        clients=(6,), intervals=(0.1,), waiters=40, to_do=0.3, in_progress=0.3, processes=2
    )
    outcome = await experiment.run(Bench(endpoints, Progress()))
    assert [r["polling"] for r in outcome.rows] == [
        "K=6 short every 0.1 s",
        "K=6 long, floor",
        "K=6 long",
        "K=40 long, floor",
        "K=40 long",
        "K=40 long, 2 server processes",
    ]
    for watch, row in zip(experiment.watches(), outcome.rows, strict=True):
        assert row["errors"] == 0
        assert 0 < row["detection p50 (ms)"] <= row["detection p99 (ms)"]
        assert row["server CPU (s)"] > 0
        assert row["client CPU (s)"] > 0
        if watch.floor:  # the bare server: every poll answered, nothing lost
            assert row["missed statuses"] == 0
            assert row["requests"] == STATUSES_PER_CREATION * watch.clients
            assert row["server memory per client (KB)"] is not None
        elif watch.long:
            # One answer per status seen, and no poll held to its timeout.
            seen = STATUSES_PER_CREATION * watch.clients - row["missed statuses"]
            assert row["requests"] == seen
            assert row["server answer p99 (ms)"] > 0
            assert row["server memory per client (KB)"] is not None
            assert row["p50 / floor"] > 0
            assert row["p99 / floor"] > 0
        else:  # a short poller asks again and again while nothing changes
            assert row["requests per client"] > STATUSES_PER_CREATION
    assert any("Target: long-poll detection p99" in note for note in outcome.notes)


def test_a_skipped_status_counts_until_the_newer_answer() -> None:
    """Two clients watch versions 8, 9, 10 (changed at 100, 101, 102 s). The slow one
    skips 9: it learned of that change only with its answer about 10, at 102.5 s, so
    its delay for 9 is 1.5 s, not left out of the percentiles."""
    results = [
        {
            "seen": [
                [8, "TO_DO", 100.01, 100.0],
                [9, "IN", 101.01, 101.0],
                [10, "DONE", 102.01, 102.0],
            ]
        },
        {"seen": [[8, "TO_DO", 100.02, 100.0], [10, "DONE", 102.5, 102.0]]},
    ]
    delays, seen = detection(results, before=7)
    assert seen == 5
    assert delays.count == 6
    assert delays.max_ms == pytest.approx(1500, rel=1e-3)
