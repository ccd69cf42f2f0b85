"""Snowflake ids: 41 bits of milliseconds, 10 of machine, 12 of sequence.

    ids = Snowflake(machine=7)
    ids.next_id()          # 7_322_...: unique as long as no other process uses machine 7
    ids.next_ids(10_000)   # a batch: a list, in order

Up to 4,096 ids per millisecond per machine; past that the generator waits for the
next millisecond. If the clock steps back (NTP), it waits up to `max_backwards_ms`
for time to catch up, else raises ClockMovedBackwards: never an id twice.

The machine id must be unique among running generators. `MachineLease` hands them out
from Redis (as Leaf does with ZooKeeper) and keeps them while the process lives.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

from sdlab.ids.layout import SNOWFLAKE, Layout, Parts


class ClockMovedBackwards(RuntimeError):
    """The clock went back further than the generator is willing to wait out."""


class Snowflake:
    """A Snowflake generator for one machine id.

    Not thread-safe by default (a lock halves its speed): use one per
    thread or event loop, or pass `threadsafe=True` to share one between threads."""

    def __init__(
        self,
        machine: int | Callable[[], int],
        *,
        layout: Layout = SNOWFLAKE,
        max_backwards_ms: int = 10,
        clock_ns: Callable[[], int] = time.time_ns,
        threadsafe: bool = False,
    ) -> None:
        """machine: the machine id, or a callable returning it that raises when it is
        no longer ours (a `MachineLease.check`), called once per millisecond."""
        self.layout = layout
        self._check = machine if callable(machine) else None
        self.machine = machine() if callable(machine) else machine
        if not 0 <= self.machine <= layout.max_node:
            raise ValueError(f"machine id must be in 0..{layout.max_node}, got {self.machine}")
        self.max_backwards_ms = max_backwards_ms
        self._clock_ns = clock_ns
        self._epoch_ns = layout.epoch_ms * 1_000_000
        self._epoch_ms = layout.epoch_ms
        self._prefix = 0
        self._time_shift = layout.node_bits + layout.sequence_bits
        self._node_part = self.machine << layout.sequence_bits
        self._max_sequence = layout.max_sequence
        self._last_ms = -1
        self._sequence = 0
        self._lock = threading.Lock() if threadsafe else contextlib.nullcontext()
        if threadsafe:
            unlocked = self.next_id

            def next_id() -> int:
                with self._lock:
                    return unlocked()

            self.next_id = next_id  # type: ignore[method-assign]  # this instance locks: its own next_id

    def next_id(self) -> int:
        """The next id: greater than every id this generator made before."""
        ms = self._clock_ns() // 1_000_000 - self._epoch_ms
        if ms == self._last_ms:  # the common case first: another id in this millisecond
            sequence = self._sequence + 1
            if sequence <= self._max_sequence:
                self._sequence = sequence
                return self._prefix | sequence  # time and machine bits, made once per ms
            ms = self._next_millisecond()
        elif ms > self._last_ms:
            self._new_millisecond()
        else:
            ms = self._clock_went_back(ms)
            if ms == self._last_ms:
                self._sequence += 1
                if self._sequence > self._max_sequence:
                    ms = self._next_millisecond()
            else:
                self._new_millisecond()
        self._last_ms = ms
        self._prefix = (ms << self._time_shift) | self._node_part
        return self._prefix | self._sequence

    def next_ids(self, count: int) -> list[int]:
        """`count` ids in increasing order, a millisecond's worth at a time."""
        if count < 0:
            raise ValueError("count must not be negative")
        ids: list[int] = []
        with self._lock:
            while len(ids) < count:
                ms = (self._clock_ns() - self._epoch_ns) // 1_000_000
                if ms < self._last_ms:
                    ms = self._clock_went_back(ms)
                if ms == self._last_ms:
                    first = self._sequence + 1
                    if first > self._max_sequence:
                        ms, first = self._next_millisecond(), 0
                else:
                    self._new_millisecond()
                    first = 0
                last = min(self._max_sequence, first + count - len(ids) - 1)
                base = (ms << self._time_shift) | self._node_part
                ids.extend(range(base | first, (base | last) + 1))
                self._last_ms, self._sequence, self._prefix = ms, last, base
        return ids

    def decode(self, value: int) -> Parts:
        return self.layout.decode(value)

    def _new_millisecond(self) -> None:
        if self._check is not None:
            self._check()  # raises if our machine id lease is gone (state untouched)
        self._sequence = 0

    def _next_millisecond(self) -> int:
        """Spin until the clock passes the last millisecond used (4,096 ids spent);
        the sequence restarts at 0."""
        while True:
            ms = (self._clock_ns() - self._epoch_ns) // 1_000_000
            if ms > self._last_ms:
                self._new_millisecond()
                return ms

    def _clock_went_back(self, ms: int) -> int:
        behind = self._last_ms - ms
        if behind > self.max_backwards_ms:
            raise ClockMovedBackwards(
                f"the clock is {behind} ms behind the last id's time; refusing to make ids "
                f"until it catches up (waiting is allowed up to {self.max_backwards_ms} ms)"
            )
        time.sleep(behind / 1000)
        while (ms := (self._clock_ns() - self._epoch_ns) // 1_000_000) < self._last_ms:
            time.sleep(0.0005)
        return ms
