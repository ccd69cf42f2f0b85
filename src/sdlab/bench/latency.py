"""`Latency` and `Stopwatch` live in `sdlab.latency`, where libraries can import them
without the harness; this name stays for experiments."""

from sdlab.latency import Latency, Stopwatch

__all__ = ["Latency", "Stopwatch"]
