"""Five ways to pick a key's shard, behind one interface.

    router = make_router("ring", shards=3)
    router.shard_for(7_322_114_001)       # 0, 1 or 2, the same in every process

Every router routes on `key_hash(key)`, a stable 64-bit hash (BLAKE2b), never on the key
itself and never on Python's `hash()` (salted per process for strings, and an int's
`hash()` is the int). Why not the key: Snowflake ids keep a per-millisecond sequence in
their low bits, which is 0 whenever a machine makes fewer than one id a millisecond, so
the seed's `user_id % 2` would put every such user on shard 0.

What a router is for (docs/sharding.md says more):
- `modulo`: hash % N, the seed's rule on a hash; adding a shard moves about (N-1)/N keys.
- `range`: N equal ranges of the hash space, as Vitess's key ranges; resplitting them
  evenly for N+1 moves about half the keys.
- `ring`: a consistent-hash ring, `vnodes` points per shard; adding one moves ~1/(N+1).
- `jump`: Lamping and Veach's jump consistent hash: no table, perfect balance, moves
  ~1/(N+1), but shards can only be added or removed at the end.
- `rendezvous`: highest random weight: each key goes to the shard that scores it
  highest; moves ~1/(N+1), any shard can leave, costs N scores a lookup.
"""

from __future__ import annotations

import bisect
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

MASK64 = (1 << 64) - 1
SPACE = 1 << 64  # the hash space every router divides


def key_hash(key: int) -> int:
    """A 64-bit hash of a key, the same on every machine and in every process."""
    digest = hashlib.blake2b(key.to_bytes(8, "big", signed=True), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def name_hash(name: str) -> int:
    """A 64-bit hash of a name (a ring point's label, a shard's name)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big")


def mix64(x: int) -> int:
    """SplitMix64's finaliser: a cheap, well-spread 64-bit mixing of `x`."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & MASK64
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & MASK64
    return x ^ (x >> 31)


class Router(ABC):
    """Maps a key to one of `shards` shards, numbered 0..shards-1."""

    name: ClassVar[str]

    def __init__(self, shards: int) -> None:
        if shards < 1:
            raise ValueError(f"a router needs at least one shard, got {shards}")
        self.shards = shards

    def shard_for(self, key: int) -> int:
        """The shard that holds `key`."""
        return self.shard_of_hash(key_hash(key))

    @abstractmethod
    def shard_of_hash(self, h: int) -> int:
        """The shard for a key whose `key_hash` is `h` (lets callers hash once)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shards={self.shards})"


class Modulo(Router):
    """hash % N: simple and even, but growing N moves almost every key."""

    name = "modulo"

    def shard_of_hash(self, h: int) -> int:
        return h % self.shards


class Range(Router):
    """Contiguous ranges of the hash space; `bounds[i]` is where shard i+1 starts.

    By default N equal ranges. (Vitess adds a shard by splitting one range in two:
    only that range's keys move, but the ranges are no longer equal.)"""

    name = "range"

    def __init__(self, shards: int, bounds: Sequence[int] | None = None) -> None:
        super().__init__(shards)
        if bounds is None:
            bounds = [SPACE * i // shards for i in range(1, shards)]
        if len(bounds) != shards - 1 or list(bounds) != sorted(set(bounds)):
            raise ValueError("bounds must be shards-1 increasing starting points")
        self.bounds = list(bounds)

    def shard_of_hash(self, h: int) -> int:
        return bisect.bisect_right(self.bounds, h)


class Ring(Router):
    """A consistent-hash ring with `vnodes` points per shard; a key belongs to the
    first point clockwise from its hash. Points are labelled by shard number, so
    shard i keeps its points when others join or leave."""

    name = "ring"

    def __init__(self, shards: int, vnodes: int = 160) -> None:
        super().__init__(shards)
        if vnodes < 1:
            raise ValueError("vnodes must be at least 1")
        self.vnodes = vnodes
        points = sorted(
            (name_hash(f"shard-{shard}#{v}"), shard)
            for shard in range(shards)
            for v in range(vnodes)
        )
        self._positions = [p for p, _ in points]
        self._owners = [s for _, s in points]

    def shard_of_hash(self, h: int) -> int:
        i = bisect.bisect_left(self._positions, h)
        return self._owners[i % len(self._owners)]


class Jump(Router):
    """Jump consistent hash (Lamping and Veach, 2014): O(log N) steps, no memory."""

    name = "jump"

    def shard_of_hash(self, h: int) -> int:
        b, j = -1, 0
        while j < self.shards:
            b = j
            h = (h * 2862933555777941757 + 1) & MASK64
            j = int((b + 1) * ((1 << 31) / ((h >> 33) + 1)))
        return b


class Rendezvous(Router):
    """Highest random weight: the shard whose score for the key is highest wins."""

    name = "rendezvous"

    def __init__(self, shards: int) -> None:
        super().__init__(shards)
        self._seeds = [name_hash(f"shard-{shard}") for shard in range(shards)]

    def shard_of_hash(self, h: int) -> int:
        best, best_score = 0, -1
        for shard, seed in enumerate(self._seeds):
            score = mix64(h ^ seed)
            if score > best_score:
                best, best_score = shard, score
        return best


ROUTERS: dict[str, type[Router]] = {r.name: r for r in (Modulo, Range, Ring, Jump, Rendezvous)}


def make_router(name: str, shards: int) -> Router:
    """The router called `name` over `shards` shards (ValueError names the choices)."""
    try:
        return ROUTERS[name](shards)
    except KeyError:
        raise ValueError(f"unknown router {name!r}; choose one of {', '.join(ROUTERS)}") from None
