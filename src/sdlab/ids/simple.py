"""The seed's simple generator: epoch milliseconds, a machine id and a counter.

A 128-bit id: 48 bits of ms since 1970, 16 of machine, 64 of counter. Uniqueness comes
from (machine, counter): the counter never repeats, because it is saved to disk in
blocks. Before handing out counter values [n, n + K) the generator records n + K; after
a crash it resumes from what was recorded, skipping at most K - 1 values but never
reusing one. K (`save_every`) trades disk writes for skipped values.

With `durable=True` (the default) the record is fsynced and renamed into place, so it
survives a power cut, not only a process crash. `experiment.py` measures both.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

from sdlab.ids.layout import Layout, Parts

SIMPLE = Layout("simple", 0, 48, 16, 64)


class StateInUse(RuntimeError):
    """Another generator holds the state file."""


class SimpleGenerator:
    def __init__(
        self, machine: int, state: Path | str, *, save_every: int = 1000, durable: bool = True
    ) -> None:
        if not 0 <= machine <= SIMPLE.max_node:
            raise ValueError(f"machine id must be in 0..{SIMPLE.max_node}, got {machine}")
        if save_every < 1:
            raise ValueError("save_every must be at least 1")
        self.machine = machine
        self.state = Path(state)
        self.save_every = save_every
        self.durable = durable
        self.saves = 0
        # One generator per state file: a second one would hand out the same counters.
        self._state_lock = open(self.state.with_name(self.state.name + ".lock"), "a")  # noqa: SIM115
        try:
            fcntl.flock(self._state_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._state_lock.close()
            raise StateInUse(f"another generator is using {self.state}") from None
        self._counter = int(self.state.read_text()) if self.state.exists() else 0
        self._reserved = self._counter  # nothing reserved yet in this run
        self._node_part = machine << 64
        self._lock = threading.Lock()

    def next_id(self) -> int:
        with self._lock:
            if self._counter >= self._reserved:
                self._reserve(self.save_every)
            counter = self._counter
            self._counter += 1
        return (time.time_ns() // 1_000_000 << 80) | self._node_part | counter

    def next_ids(self, count: int) -> list[int]:
        ids: list[int] = []
        with self._lock:
            while len(ids) < count:
                if self._counter >= self._reserved:
                    self._reserve(self.save_every)
                take = min(count - len(ids), self._reserved - self._counter)
                base = (time.time_ns() // 1_000_000 << 80) | self._node_part
                ids.extend(range(base | self._counter, (base | self._counter) + take))
                self._counter += take
        return ids

    def decode(self, value: int) -> Parts:
        return SIMPLE.decode(value)

    def close(self) -> None:
        """Let another generator use the state file."""
        self._state_lock.close()

    def _reserve(self, block: int) -> None:
        """Record that values below counter + block may be in use, before using them
        (if the save fails, nothing is handed out)."""
        reserved = self._counter + block
        temporary = self.state.with_name(f"{self.state.name}.{os.getpid()}.tmp")
        with open(temporary, "w") as out:
            out.write(str(reserved))
            if self.durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(temporary, self.state)
        if self.durable:
            directory = os.open(self.state.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        self._reserved = reserved
        self.saves += 1
