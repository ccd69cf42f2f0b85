"""A connection's transaction state: the MULTI queue and the WATCH set, and the server's
registry of who watches which key.

A watched key is caught changing in two ways. Every write queued by this process (the
RESP server's and the HTTP API's, through `Store.listeners`) marks the watchers of its
keys at once, even a write that changes nothing (a SET NX that finds the key), so that
EXEC is refused without a query. A write by another process on the same table is caught
inside EXEC's own SQL transaction: each watched key is read again, locked, and compared
with what WATCH read (`ops.Transaction`); a write that left the row exactly as it was
(the same value and expiry) is not seen that way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sdlab.kv import ops
from sdlab.kv.sql import Dialect


class Watch:
    """The keys one connection watches: what WATCH read of each, and whether this
    process has written one of them since."""

    def __init__(self) -> None:
        self.seen: dict[bytes, ops.State] = {}  # by `ops.qualified` key
        self.where: dict[bytes, tuple[Dialect | None, bytes]] = {}  # its table (None: 0), key
        self.touched = False

    def __bool__(self) -> bool:
        return bool(self.seen)

    def watched(self) -> tuple[tuple[Dialect | None, bytes, ops.State], ...]:
        return tuple((*self.where.get(k, (None, k)), state) for k, state in self.seen.items())


class Watches:
    """Who watches which key, in this process: `touch()` marks them on every write."""

    def __init__(self) -> None:
        self._by_key: dict[bytes, set[Watch]] = {}

    def add(self, watch: Watch, keys: Iterable[bytes]) -> None:
        for key in keys:
            self._by_key.setdefault(key, set()).add(watch)

    def remove(self, watch: Watch) -> None:
        for key in watch.seen:
            watchers = self._by_key.get(key)
            if watchers is not None:
                watchers.discard(watch)
                if not watchers:
                    del self._by_key[key]

    def touch(self, write: ops.Write) -> None:
        if not self._by_key:  # nearly always: nobody watches
            return
        for key in write.written():
            if key == ops.EVERY_KEY:  # FLUSHDB: every watcher
                for watchers in self._by_key.values():
                    for watch in watchers:
                        watch.touched = True
                return
            for watch in self._by_key.get(key, ()):
                watch.touched = True

    def __len__(self) -> int:
        return len(self._by_key)


@dataclass
class Multi:
    """Commands queued between MULTI and EXEC, each a request as it came (name first);
    `refused`: one of them was refused while queueing (unknown, wrong arity), so EXEC
    will answer EXECABORT and run none."""

    queued: list[list[bytes]] = field(default_factory=list)
    refused: bool = False
