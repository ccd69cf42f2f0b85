"""The order of one connection's commands: each sees the effect of those sent before it,
while a run of writes (or of reads) goes to the database together. No I/O here: the
connection asks `admit()` what a new command must wait for, and `track()`s its reply.
"""

from __future__ import annotations

import asyncio
from typing import Any


class Ordering:
    """What a new command of a connection must wait for, so that it sees the effect of
    the commands sent before it: a read waits for earlier writes, a write for earlier
    reads; a run of the same kind goes without waiting for each other's results.
    `serial` commands wait for everything before them: writes without group commit, and
    "session" commands (HELLO), which change how the replies after them are encoded, and
    so wait for those before them to be encoded first.

    Within a run, commands also *start* in order: each waits for the one before it to
    have started (for a write: to be in the batcher), not only for the run's gate. Tasks
    waiting on one gate do not wake in the order they were made (a task whose first
    step comes after the gate is done does not wait at all), so a gate alone let a
    pipeline's `SET k 39` reach the batcher before its `SET k 4`."""

    def __init__(self) -> None:
        self.kind: str | None = None
        self.running: list[asyncio.Future[Any]] = []  # this run's replies not yet known
        self.gate: asyncio.Future[Any] | None = None  # the earlier run's end
        self.last: asyncio.Future[None] | None = None  # the run's last command has started

    def admit(self, kind: str, serial: bool) -> asyncio.Future[Any] | None:
        """A new command of `kind`: what it must wait for before it starts (None: no
        wait). Call `started()` or `track()` for it next."""
        if kind != self.kind or serial:
            earlier = [task for task in self.running if not task.done()]
            self.gate = asyncio.gather(*earlier, return_exceptions=True) if earlier else None
            self.running = []
            self.last = None
            self.kind = kind
        waits = self.last if self.last is not None else self.gate
        return None if waits is None or waits.done() else waits

    def track(self, reply: asyncio.Future[Any], started: asyncio.Future[None] | None) -> None:
        """The admitted command's reply, and the future it sets once it has started
        (None: it started already, as a write put straight into the batcher does)."""
        if len(self.running) >= 64:  # a long run of one kind: forget what has finished
            self.running = [task for task in self.running if not task.done()]
        self.running.append(reply)
        self.last = started
