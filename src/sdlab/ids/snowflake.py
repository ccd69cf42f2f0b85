"""Snowflake ids: 41 bits of milliseconds, 10 of machine, 12 of sequence.

    ids = Snowflake(machine=7)
    ids.next_id()          # 7_322_...: unique as long as no other process uses machine 7
    ids.next_ids(10_000)   # a batch: a list, in order

Up to 4,096 ids per millisecond per machine; past that the generator waits for the
next millisecond. If the clock steps back (NTP), it waits up to `max_backwards_ms`
for time to catch up, else raises ClockMovedBackwards: never an id twice.

The machine id must be unique among running generators. `MachineLease` hands them out
from Redis (as Leaf does with ZooKeeper) and keeps them while the process lives.

A restart forgets the last millisecond used: if the clock stepped back meanwhile, a new
generator with the same machine id makes the same ids again. With `state=path` the
generator records a horizon there (as Leaf records its last timestamp in ZooKeeper):
before using a millisecond past the horizon it writes a new one `reserve_ms` ahead
(fsynced, so once a second by default). A new generator on the same file waits until
its clock is past the horizon, or raises ClockMovedBackwards at once if that is more
than `reserve_ms + max_backwards_ms` away (a restart right away is up to `reserve_ms`
behind; a clock step back adds to that).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

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
        state: Path | str | None = None,
        reserve_ms: int = 1000,
    ) -> None:
        """machine: the machine id, or a callable returning it that raises when it is
        no longer ours (a `MachineLease.check`), called once per millisecond.
        state: a file recording the horizon for this machine id across restarts (one
        generator per file); None for a leased machine id, whose lease keeps one."""
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
        self._state = Path(state) if state is not None else None
        self._reserve_ms = reserve_ms
        self._horizon = -1  # the last millisecond recorded in `state` as possibly used
        if self._state is not None:
            self._resume()
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
            self._new_millisecond(ms)
        else:
            ms = self._clock_went_back(ms)
            if ms == self._last_ms:
                self._sequence += 1
                if self._sequence > self._max_sequence:
                    ms = self._next_millisecond()
            else:
                self._new_millisecond(ms)
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
                    self._new_millisecond(ms)
                    first = 0
                last = min(self._max_sequence, first + count - len(ids) - 1)
                base = (ms << self._time_shift) | self._node_part
                ids.extend(range(base | first, (base | last) + 1))
                self._last_ms, self._sequence, self._prefix = ms, last, base
        return ids

    def decode(self, value: int) -> Parts:
        return self.layout.decode(value)

    def _new_millisecond(self, ms: int) -> None:
        if self._check is not None:
            self._check()  # raises if our machine id lease is gone (state untouched)
        if self._state is not None and ms > self._horizon:
            self._record(ms + self._reserve_ms)
        self._sequence = 0

    def _resume(self) -> None:
        """Start past the recorded horizon: wait for the clock to pass it, or refuse."""
        assert self._state is not None
        try:
            horizon = int(self._state.read_text())
        except FileNotFoundError:
            return
        behind = horizon - self._now_ms()
        if behind > self._reserve_ms + self.max_backwards_ms:
            raise ClockMovedBackwards(
                f"the clock is {behind} ms behind the horizon recorded in {self._state} "
                f"by the last generator with machine id {self.machine}; refusing to start "
                "until it catches up"
            )
        self._horizon = horizon
        # As if the horizon's millisecond were full: the first id needs a later one.
        self._last_ms, self._sequence = horizon, self._max_sequence
        self._prefix = (horizon << self._time_shift) | self._node_part
        self._wait_past(horizon)

    def _record(self, horizon: int) -> None:
        """Write `horizon` durably before any millisecond up to it is used."""
        assert self._state is not None
        temporary = self._state.with_name(self._state.name + ".tmp")
        with open(temporary, "w") as file:
            file.write(str(horizon))
            file.flush()
            os.fsync(file.fileno())
        temporary.replace(self._state)
        self._horizon = horizon

    def _now_ms(self) -> int:
        return (self._clock_ns() - self._epoch_ns) // 1_000_000

    def _wait_past(self, ms: int) -> None:
        """Sleep until the clock is nearly past `ms`, then spin (as `_next_millisecond`
        does; the clock may be a simulated one that moves as it is read)."""
        if (behind := ms - self._now_ms()) > 0:
            time.sleep(behind / 1000)
        while self._now_ms() <= ms:
            pass

    def _next_millisecond(self) -> int:
        """Spin until the clock passes the last millisecond used (4,096 ids spent);
        the sequence restarts at 0."""
        while True:
            ms = (self._clock_ns() - self._epoch_ns) // 1_000_000
            if ms > self._last_ms:
                self._new_millisecond(ms)
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
