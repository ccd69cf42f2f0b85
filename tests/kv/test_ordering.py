"""The order of a connection's commands, as a unit: futures only, no sockets, no store."""

from __future__ import annotations

import asyncio
from typing import Any

from sdlab.kv.ordering import Ordering


def future() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


async def test_a_run_of_writes_waits_only_for_the_one_before_to_start() -> None:
    ordering = Ordering()
    assert ordering.admit("write", serial=False) is None  # nothing before it
    ordering.track(future(), None)  # straight into the batcher: started already
    assert ordering.admit("write", serial=False) is None
    started = future()
    ordering.track(future(), started)  # a task: it starts later
    assert ordering.admit("write", serial=False) is started  # not its reply: its start
    started.set_result(None)
    assert ordering.admit("write", serial=False) is None


async def test_a_read_waits_for_every_earlier_write_to_be_answered() -> None:
    ordering = Ordering()
    first, second = future(), future()
    for write in (first, second):
        ordering.admit("write", serial=False)
        ordering.track(write, None)
    gate = ordering.admit("read", serial=False)
    assert gate is not None
    ordering.track(future(), None)
    assert ordering.admit("read", serial=False) is gate  # the run of reads shares it
    first.set_result(b"+OK\r\n")
    await asyncio.sleep(0)
    assert not gate.done()
    second.set_exception(RuntimeError("a failed write still ends the run"))
    await asyncio.sleep(0)
    assert gate.done()


async def test_a_write_after_answered_reads_does_not_wait() -> None:
    ordering = Ordering()
    ordering.admit("read", serial=False)
    read = future()
    ordering.track(read, None)
    read.set_result(b"$-1\r\n")
    assert ordering.admit("write", serial=False) is None


async def test_a_serial_command_waits_for_everything_before_it_even_of_its_kind() -> None:
    ordering = Ordering()
    ordering.admit("session", serial=True)
    watch = future()
    ordering.track(watch, None)
    gate = ordering.admit("session", serial=True)  # UNWATCH after a WATCH, say
    assert gate is not None
    watch.set_result(b"+OK\r\n")
    await asyncio.sleep(0)
    assert gate.done()


async def test_a_long_run_forgets_the_replies_already_sent() -> None:
    ordering = Ordering()
    for _ in range(200):
        ordering.admit("write", serial=False)
        done = future()
        done.set_result(b"+OK\r\n")
        ordering.track(done, None)
    assert len(ordering.running) <= 64
    assert ordering.admit("read", serial=False) is None  # all of them answered
