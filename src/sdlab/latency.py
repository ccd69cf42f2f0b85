"""Timing: `perf_counter_ns` readings, kept in an HDR histogram for percentiles.

A library module of its own (it imports only hdrh), so that the pool and other systems
can keep latencies without loading the experiment harness.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from time import perf_counter_ns

from hdrh.histogram import HdrHistogram

_NS_PER_MS = 1_000_000
_HIGHEST_NS = 3_600 * 1_000_000_000  # one hour: anything slower is a hang, not a latency


class Latency:
    """Latencies of many operations, to 3 significant digits, from 1 ns to 1 hour.

    latency = Latency()
    for _ in range(n):
        with latency.time():
            await request()
    latency.summary()   # {"count": n, "mean (ms)": ..., "p50 (ms)": ..., ...}
    """

    def __init__(self) -> None:
        self._histogram = HdrHistogram(1, _HIGHEST_NS, 3)

    def record(self, ns: int, count: int = 1) -> None:
        """Add one latency (or `count` equal ones), in nanoseconds."""
        self._histogram.record_value(min(max(ns, 1), _HIGHEST_NS), count)

    @contextmanager
    def time(self) -> Iterator[None]:
        """Time the body of a `with` block (which may `await`)."""
        start = perf_counter_ns()
        try:
            yield
        finally:
            self.record(perf_counter_ns() - start)

    def merge(self, other: Latency) -> None:
        self._histogram.add(other._histogram)

    def encode(self) -> str:
        """The histogram as compact text (HdrHistogram's base64 form), to carry
        latencies measured in another process: `Latency.decode(text)` reads it back."""
        return self._histogram.encode().decode("ascii")

    @classmethod
    def decode(cls, text: str) -> Latency:
        latency = cls()
        latency._histogram.add(HdrHistogram.decode(text.encode("ascii")))
        return latency

    @property
    def count(self) -> int:
        return int(self._histogram.get_total_count())

    def percentile_ms(self, percentile: float) -> float:
        return self._histogram.get_value_at_percentile(percentile) / _NS_PER_MS

    @property
    def mean_ms(self) -> float:
        return float(self._histogram.get_mean_value()) / _NS_PER_MS

    @property
    def max_ms(self) -> float:
        return self._histogram.get_max_value() / _NS_PER_MS

    def summary(self, percentiles: tuple[float, ...] = (50, 90, 99, 99.9)) -> dict[str, float]:
        """Count, mean, the given percentiles and max, in milliseconds, as table columns."""
        if self.count == 0:
            return {"count": 0}
        row: dict[str, float] = {"count": self.count, "mean (ms)": self.mean_ms}
        for p in percentiles:
            row[f"p{p:g} (ms)"] = self.percentile_ms(p)
        row["max (ms)"] = self.max_ms
        return row


class Stopwatch:
    """Wall time of one phase:  `with Stopwatch() as watch: ...`, then `watch.ms`."""

    def __init__(self) -> None:
        self.ns = 0
        self._start = 0

    def __enter__(self) -> Stopwatch:
        self._start = perf_counter_ns()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.ns = perf_counter_ns() - self._start

    @property
    def ms(self) -> float:
        return self.ns / _NS_PER_MS

    @property
    def seconds(self) -> float:
        return self.ns / 1e9
