"""The backend pool: each backend's state, counters and weight, and the strategy over
the eligible ones.

    pool = Pool(make("least-conn"), slow_start=10)
    pool.add(Address.parse("127.0.0.1:8081"))
    backend = pool.pick("10.0.0.7")          # None: no backend is up
    pool.mark_down(backend, "connect refused")

A backend is `up` (eligible), `down` (failed its checks, or a connect) or `draining`
(no new connections; the open ones finish). Removing one takes it out of the pool at
once; connections already open to it run on. Every change of who is eligible goes to
the strategy (`Strategy.update`), so a pick costs only the strategy's own work.

Slow start: for `slow_start` seconds after a backend comes back up, its weight grows from
a tenth of its own to all of it, so a cold backend is not handed its full share at once.
The balancing strategies read it; the hashing ones ignore it (a moving weight would move
clients), as HAProxy's static algorithms do.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from sdlab.lb.strategies import NOTHING, Strategy


class LBError(Exception):
    """A request of the load balancer that cannot be done; says what and why."""


class UnknownBackend(LBError, KeyError):
    def __str__(self) -> str:
        return f"no backend {self.args[0]}"


class State(enum.StrEnum):
    UP = "up"
    DOWN = "down"
    DRAINING = "draining"


@dataclass(frozen=True, order=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Address:
        """`HOST:PORT` (an IPv6 host in brackets: `[::1]:8081`)."""
        host, sep, port = text.strip().rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"not HOST:PORT: {text!r}")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(eq=False)
class Backend:
    """One backend and what the proxy counts for it."""

    address: Address
    configured_weight: int = 1
    state: State = State.UP
    reason: str = ""
    """Why it is in its state (the last check's outcome, 'drained by the admin API', ...)."""
    slow_start: float = 0.0
    up_since: float = field(default_factory=time.monotonic)
    active: int = 0
    connections: int = 0
    """Connections proxied to it, ever."""
    failed_connects: int = 0
    bytes_in: int = 0
    """From clients to the backend."""
    bytes_out: int = 0
    """From the backend to clients."""
    checks_ok: int = 0
    checks_failed: int = 0
    streak: int = 0
    """Consecutive check outcomes: > 0 successes, < 0 failures."""

    @property
    def name(self) -> str:
        return str(self.address)

    @property
    def weight(self) -> float:
        """The weight the strategies see: the configured one, less during slow start."""
        if self.slow_start <= 0:
            return self.configured_weight
        ramp = (time.monotonic() - self.up_since) / self.slow_start
        if ramp >= 1:
            self.slow_start = 0.0  # ramp done: the next reads are one comparison
            return self.configured_weight
        return self.configured_weight * max(0.1, ramp)

    def as_dict(self) -> dict[str, object]:
        return {
            "address": self.name,
            "state": self.state.value,
            "reason": self.reason,
            "weight": self.configured_weight,
            "effective_weight": round(self.weight, 3),
            "active": self.active,
            "connections": self.connections,
            "failed_connects": self.failed_connects,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "checks_ok": self.checks_ok,
            "checks_failed": self.checks_failed,
        }


Listener = Callable[[Backend, State, str], None]


class Pool:
    """The backends behind one listener, and the strategy that picks among them."""

    def __init__(self, strategy: Strategy, *, slow_start: float = 0.0) -> None:
        self.strategy = strategy
        self.slow_start = slow_start
        self._backends: dict[str, Backend] = {}
        self.listeners: list[Listener] = []
        """Called with (backend, old state, reason) after every change of state."""

    def __iter__(self) -> Iterator[Backend]:
        return iter(list(self._backends.values()))

    def __len__(self) -> int:
        return len(self._backends)

    def get(self, name: str) -> Backend:
        try:
            return self._backends[str(Address.parse(name))]
        except (KeyError, ValueError):
            raise UnknownBackend(name) from None

    def add(self, address: Address, weight: int = 1) -> Backend:
        """A new backend, up from now (an active check takes it down if it is not)."""
        if weight < 1:
            raise LBError(f"weight must be 1 or more, not {weight}")
        if str(address) in self._backends:
            raise LBError(f"backend {address} is already in the pool")
        backend = Backend(address, weight)
        self._backends[backend.name] = backend
        self._changed()
        return backend

    def remove(self, name: str) -> Backend:
        """Out of the pool now; its open connections run on to their end."""
        backend = self.get(name)
        del self._backends[backend.name]
        self._changed()
        return backend

    def set_weight(self, name: str, weight: int) -> Backend:
        if weight < 1:
            raise LBError(f"weight must be 1 or more, not {weight}")
        backend = self.get(name)
        backend.configured_weight = weight
        self._changed()
        return backend

    def drain(self, name: str) -> Backend:
        """No new connections to it; the open ones finish."""
        backend = self.get(name)
        self._set(backend, State.DRAINING, "drained by the admin API")
        return backend

    def undrain(self, name: str) -> Backend:
        backend = self.get(name)
        if backend.state is State.DRAINING:
            self._set(backend, State.UP, "put back by the admin API")
        return backend

    def mark_down(self, backend: Backend, reason: str) -> None:
        if backend.state is State.UP:
            self._set(backend, State.DOWN, reason)
        else:
            backend.reason = reason if backend.state is State.DOWN else backend.reason

    def mark_up(self, backend: Backend, reason: str) -> None:
        if backend.state is State.DOWN:
            backend.up_since = time.monotonic()
            backend.slow_start = self.slow_start
            self._set(backend, State.UP, reason)

    def pick(self, client: str, avoid: frozenset[str] = NOTHING) -> Backend | None:
        return self.strategy.pick(client, avoid)  # type: ignore[return-value]

    def eligible(self) -> list[Backend]:
        return [b for b in self._backends.values() if b.state is State.UP]

    def _set(self, backend: Backend, state: State, reason: str) -> None:
        old = backend.state
        backend.state, backend.reason = state, reason
        if old is not state:
            self._changed()
            for listener in self.listeners:
                listener(backend, old, reason)

    def _changed(self) -> None:
        self.strategy.update(self.eligible())
