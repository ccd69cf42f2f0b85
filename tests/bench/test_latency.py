from __future__ import annotations

import time

import pytest

from sdlab.bench import Latency, Stopwatch


def test_percentiles_of_a_known_distribution() -> None:
    latency = Latency()
    for us in range(1, 10_001):  # 1 us .. 10 ms, uniform
        latency.record(us * 1_000)
    assert latency.count == 10_000
    assert latency.percentile_ms(50) == pytest.approx(5.0, rel=1e-3)
    assert latency.percentile_ms(99) == pytest.approx(9.9, rel=1e-3)
    assert latency.max_ms == pytest.approx(10.0, rel=1e-3)
    assert latency.mean_ms == pytest.approx(5.0005, rel=1e-3)
    summary = latency.summary()
    assert list(summary) == [
        "count",
        "mean (ms)",
        "p50 (ms)",
        "p90 (ms)",
        "p99 (ms)",
        "p99.9 (ms)",
        "max (ms)",
    ]


def test_merge_adds_counts() -> None:
    a, b = Latency(), Latency()
    a.record(1_000_000)
    b.record(3_000_000)
    a.merge(b)
    assert a.count == 2
    assert a.max_ms == pytest.approx(3.0, rel=1e-3)


def test_encode_carries_a_histogram_between_processes() -> None:
    latency = Latency()
    for ms in (1, 2, 3, 400):
        latency.record(ms * 1_000_000)
    text = latency.encode()
    assert isinstance(text, str)
    copy = Latency.decode(text)
    assert copy.count == 4
    assert copy.percentile_ms(50) == pytest.approx(2.0, rel=1e-3)
    assert copy.max_ms == pytest.approx(400.0, rel=1e-3)


def test_time_measures_the_block_and_survives_exceptions() -> None:
    latency = Latency()
    with latency.time():
        time.sleep(0.02)
    with pytest.raises(ValueError, match="boom"), latency.time():
        raise ValueError("boom")
    assert latency.count == 2
    assert latency.max_ms >= 20


def test_extremes_are_clamped_not_lost() -> None:
    latency = Latency()
    latency.record(0)
    latency.record(10**15)  # 11 days: clamped to the 1 h ceiling
    assert latency.count == 2


def test_stopwatch() -> None:
    with Stopwatch() as watch:
        time.sleep(0.01)
    assert 10 <= watch.ms < 1_000
    assert watch.seconds == pytest.approx(watch.ms / 1000)


def test_empty_summary() -> None:
    assert Latency().summary() == {"count": 0}
