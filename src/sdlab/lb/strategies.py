"""The seven ways to pick a backend for a new connection, behind one interface.

    strategy = make("maglev")
    strategy.update(targets)                 # the eligible backends, after every change
    target = strategy.pick("10.0.0.7")       # the client's address; None if none is eligible
    target = strategy.pick("10.0.0.7", avoid={"127.0.0.1:8081"})   # a retry elsewhere

A target is anything with a `name`, a `weight` (which slow start may lower for a while)
and `active` (its open connections). Each strategy states in `promise` what it keeps
when the backend set changes; tests/lb/test_strategies.py holds it by property.

Two families. The balancing ones (round-robin, weighted, least-conn, p2c) give clients no
affinity: a change moves no open connection, and new ones spread over the new set. The
hashing ones (source-hash, ring, maglev) send a client to the same backend while the set
stands; they differ in how many clients a change moves: any of them (source-hash's mod N),
only the clients of the backend that left or only those the newcomer takes (ring), or
those plus a few others, in return for an even spread and a lookup in one array (maglev).
"""

from __future__ import annotations

import bisect
import hashlib
import random
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from typing import ClassVar, Protocol


class Target(Protocol):
    """What a strategy reads of a backend."""

    @property
    def name(self) -> str: ...
    @property
    def weight(self) -> float: ...
    @property
    def active(self) -> int: ...


NOTHING: frozenset[str] = frozenset()


def key_hash(text: str) -> int:
    """A 64-bit hash that is the same in every process (Python's `hash` is salted)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class Strategy(ABC):
    """Picks one of the eligible targets for a new connection."""

    name: ClassVar[str]
    promise: ClassVar[str]
    uses_client: ClassVar[bool] = False
    """Whether `pick` reads the client's address (the proxy looks it up only then)."""

    def __init__(self) -> None:
        self.targets: list[Target] = []

    def update(self, targets: Sequence[Target]) -> None:
        """The eligible targets from now on (up, not draining); called after every change.
        They are taken in name order, so the outcome does not depend on the order given."""
        self.targets = sorted(targets, key=lambda t: t.name)
        self.rebuild()

    def rebuild(self) -> None:  # noqa: B027 - a hook: most strategies keep nothing
        """Recompute what `pick` reads, after `update`."""

    @abstractmethod
    def pick(self, client: str, avoid: Collection[str] = NOTHING) -> Target | None:
        """The target for a new connection from `client` (its address), never one named
        in `avoid` (those that just failed it); None if no target is left."""


class RoundRobin(Strategy):
    name = "round-robin"
    promise = (
        "No affinity. Each eligible backend in turn: in any n picks over n backends, "
        "each backend once; a change moves no open connection."
    )

    def __init__(self) -> None:
        super().__init__()
        self._next = 0

    def pick(self, client: str, avoid: Collection[str] = NOTHING) -> Target | None:
        targets = self.targets
        for _ in range(len(targets)):
            target = targets[self._next % len(targets)]
            self._next += 1
            if target.name not in avoid:
                return target
        return None


class Weighted(Strategy):
    """nginx's smooth weighted round robin: each pick adds every weight to its target's
    credit, takes the target with the most credit and charges it the total. Weights are
    read at every pick, so slow start and a new weight take effect at once."""

    name = "weighted"
    promise = (
        "No affinity. In every run of W picks (W the sum of the integer weights), each "
        "backend exactly its weight's number of times, interleaved rather than in bursts."
    )

    def __init__(self) -> None:
        super().__init__()
        self._credit: dict[str, float] = {}

    def rebuild(self) -> None:
        self._credit = {t.name: self._credit.get(t.name, 0.0) for t in self.targets}

    def pick(self, client: str, avoid: Collection[str] = NOTHING) -> Target | None:
        best: Target | None = None
        total = 0.0
        credit = self._credit
        for target in self.targets:
            if target.name in avoid:
                continue
            weight = target.weight
            total += weight
            credit[target.name] += weight
            if best is None or credit[target.name] > credit[best.name]:
                best = target
        if best is not None:
            credit[best.name] -= total
        return best


def _load(target: Target) -> float:
    weight = target.weight
    return target.active / weight if weight > 0 else float("inf")


class LeastConnections(Strategy):
    name = "least-conn"
    promise = (
        "No affinity. A backend with the fewest open connections per unit of weight "
        "(ties: the next in turn); a change moves no open connection."
    )

    def __init__(self) -> None:
        super().__init__()
        self._turn = 0

    def pick(self, client: str, avoid: Collection[str] = NOTHING) -> Target | None:
        targets = self.targets
        count = len(targets)
        best: Target | None = None
        best_load = 0.0
        self._turn += 1
        for i in range(count):
            target = targets[(self._turn + i) % count]
            if target.name in avoid:
                continue
            load = _load(target)
            if best is None or load < best_load:
                best, best_load = target, load
        return best


class PowerOfTwoChoices(Strategy):
    """Two distinct backends at random, the less loaded of the two (Mitzenmacher): nearly
    least-conn's balance without reading every backend, and no herd on the emptiest one
    when many balancers share the backends."""

    name = "p2c"
    promise = (
        "No affinity. The less loaded of two distinct random backends, so never the "
        "single most loaded one when there are two or more."
    )

    def __init__(self, rng: random.Random | None = None) -> None:
        super().__init__()
        self._rng = rng or random.Random()

    def pick(self, client: str, avoid: Collection[str] = NOTHING) -> Target | None:
        targets = self.targets
        if avoid:
            targets = [t for t in targets if t.name not in avoid]
        if len(targets) < 2:
            return targets[0] if targets else None
        a, b = self._rng.sample(targets, 2)
        return a if _load(a) <= _load(b) else b


class SourceHash(Strategy):
    """HAProxy's `balance source` (map-based): the client's address hashed, modulo the
    total weight, on a map in which each backend has `weight` slots."""

    name = "source-hash"
    uses_client = True
    promise = (
        "A client keeps its backend while the set stands. A change re-deals the map: "
        "any client may move, about (n-1)/n of them."
    )

    def __init__(self) -> None:
        super().__init__()
        self._slots: list[Target] = []

    def rebuild(self) -> None:
        self._slots = [t for t in self.targets for _ in range(max(1, round(t.weight)))]

    def pick(self, client: str, avoid: Collection[str] = NOTHING) -> Target | None:
        slots = self._slots
        if not slots:
            return None
        start = key_hash(client) % len(slots)
        for i in range(len(slots)):
            target = slots[(start + i) % len(slots)]
            if target.name not in avoid:
                return target
        return None


class Ring(Strategy):
    """Consistent hashing (Karger et al.): each backend is `points x weight` points on a
    circle of 64-bit hashes; a client goes to the first point at or after its own hash."""

    name = "ring"
    uses_client = True
    promise = (
        "A client keeps its backend while the set stands. When a backend leaves, only its "
        "clients move; when one joins, only the clients it takes move (to it)."
    )

    def __init__(self, points: int = 160) -> None:
        super().__init__()
        self.points = points
        self._hashes: list[int] = []
        self._owners: list[Target] = []

    def rebuild(self) -> None:
        ring = sorted(
            (key_hash(f"{t.name}#{i}"), t.name, t)
            for t in self.targets
            for i in range(max(1, round(self.points * t.weight)))
        )
        self._hashes = [h for h, _, _ in ring]
        self._owners = [t for _, _, t in ring]

    def pick(self, client: str, avoid: Collection[str] = NOTHING) -> Target | None:
        owners = self._owners
        if not owners:
            return None
        start = bisect.bisect_left(self._hashes, key_hash(client))
        # A retry walks on round the circle: where this backend's clients would go if
        # it left.
        for i in range(len(owners)):
            target = owners[(start + i) % len(owners)]
            if target.name not in avoid:
                return target
        return None


class Maglev(Strategy):
    """Google's Maglev hashing (Eisenbud et al., NSDI 2016): every backend has its own
    permutation of a table of M slots (M prime); in turns, each takes its next preferred
    free slot until the table is full. A lookup is one hash and one index. A backend of
    weight w takes w slots per turn."""

    name = "maglev"
    uses_client = True
    promise = (
        "A client keeps its backend while the set stands, and the table is even: with equal "
        "weights, slot counts differ by at most one. When a backend leaves, its clients "
        "move and a few others too (the paper's 'minimal disruption', not none)."
    )

    def __init__(self, size: int = 65537) -> None:
        super().__init__()
        self.size = size
        self._table: list[Target] = []

    def rebuild(self) -> None:
        self._table = self.populate(self.targets, self.size)

    @staticmethod
    def populate(targets: Sequence[Target], size: int) -> list[Target]:
        """The lookup table: the paper's Pseudocode 1, with weighted turns."""
        if not targets:
            return []
        offsets, skips, turns = [], [], []
        for t in targets:
            offsets.append(key_hash(f"offset:{t.name}") % size)
            skips.append(key_hash(f"skip:{t.name}") % (size - 1) + 1)
            turns.append(max(1, round(t.weight)))
        tried = [0] * len(targets)
        owner: list[int] = [-1] * size
        filled = 0
        while True:
            for i in range(len(targets)):
                offset, skip, j = offsets[i], skips[i], tried[i]
                for _ in range(turns[i]):
                    slot = (offset + j * skip) % size
                    while owner[slot] >= 0:
                        j += 1
                        slot = (offset + j * skip) % size
                    owner[slot] = i
                    j += 1
                    filled += 1
                    if filled == size:
                        return [targets[k] for k in owner]
                tried[i] = j

    def pick(self, client: str, avoid: Collection[str] = NOTHING) -> Target | None:
        table = self._table
        if not table:
            return None
        start = key_hash(client) % len(table)
        target = table[start]
        if target.name not in avoid:
            return target
        names = {t.name for t in self.targets} - set(avoid)
        if not names:
            return None
        i = start
        while table[i].name not in names:
            i = (i + 1) % len(table)
        return table[i]


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        RoundRobin,
        Weighted,
        LeastConnections,
        PowerOfTwoChoices,
        SourceHash,
        Ring,
        Maglev,
    )
}


def make(name: str) -> Strategy:
    """A new strategy by its `--strategy` name."""
    try:
        return STRATEGIES[name]()
    except KeyError:
        known = ", ".join(STRATEGIES)
        raise ValueError(f"no strategy called {name!r}; known: {known}") from None
