"""What the pool counts, and the plain dict of it that `Pool.stats()` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from sdlab.latency import Latency


class Discard(Enum):
    """Why an open pool closed a connection; the value is its counter in `stats()`."""

    LOST = "connections_lost"  # found broken (or in an unknown state), on return or checkout
    RECYCLED = "connections_recycled"  # past max_lifetime
    IDLED_OUT = "connections_idled_out"  # idle for max_idle while above min_size
    SHRUNK = "connections_shrunk"  # above max_size after resize()


@dataclass
class Counters:
    """Counters since the pool was made; `stats()` only reads them."""

    requests: int = 0
    requests_queued: int = 0
    requests_timeouts: int = 0
    connections_opened: int = 0
    connections_closed: int = 0
    connections_failed: int = 0
    discards: dict[Discard, int] = field(default_factory=lambda: dict.fromkeys(Discard, 0))
    returns_rolled_back: int = 0
    leaks_suspected: int = 0
    wait: Latency = field(default_factory=Latency)  # of requests that queued
    served_at_once: int = 0  # requests that found an idle connection: no wait to record
    usage_count: int = 0  # connections given back, and how long they were held
    usage_ns_total: int = 0
    usage_ns_max: int = 0

    def discarded(self, reason: Discard) -> None:
        self.discards[reason] += 1

    def given_back(self, held_ns: int) -> None:
        self.usage_count += 1
        self.usage_ns_total += held_ns
        self.usage_ns_max = max(self.usage_ns_max, held_ns)

    def summary(self) -> dict[str, int | float]:
        """The counters, then the waits (ms, every request's) and the holding times."""
        held = self.usage_ns_total / self.usage_count if self.usage_count else 0
        return {
            "requests": self.requests,
            "requests_queued": self.requests_queued,
            "requests_timeouts": self.requests_timeouts,
            "connections_opened": self.connections_opened,
            "connections_closed": self.connections_closed,
            "connections_failed": self.connections_failed,
            **{reason.value: count for reason, count in self.discards.items()},
            "returns_rolled_back": self.returns_rolled_back,
            "leaks_suspected": self.leaks_suspected,
            "served_at_once": self.served_at_once,
            "wait_ms_p50": self.wait_percentile_ms(50),
            "wait_ms_p99": self.wait_percentile_ms(99),
            "wait_ms_max": self.wait.max_ms if self.wait.count else 0.0,
            "usage_ms_mean": held / 1e6,
            "usage_ms_max": self.usage_ns_max / 1e6,
        }

    def wait_percentile_ms(self, percentile: float) -> float:
        """A percentile of every request's wait: those served at once count as 0 (they
        are counted, not recorded, to keep the fast path cheap)."""
        zeros, recorded = self.served_at_once, self.wait.count
        rank = percentile / 100 * (zeros + recorded)
        if recorded == 0 or rank <= zeros:
            return 0.0
        return self.wait.percentile_ms(min(100.0, (rank - zeros) / recorded * 100))
