"""The experiment harness: timing, percentiles, experiments, the seed's figures, reports."""

from sdlab.bench.experiment import (
    REGISTRY,
    Bench,
    Chart,
    Experiment,
    Headline,
    Outcome,
    Row,
    register,
)
from sdlab.bench.seed import Published, published, showed
from sdlab.latency import Latency, Stopwatch

__all__ = [
    "REGISTRY",
    "Bench",
    "Chart",
    "Experiment",
    "Headline",
    "Latency",
    "Outcome",
    "Published",
    "Row",
    "Stopwatch",
    "published",
    "register",
    "showed",
]
