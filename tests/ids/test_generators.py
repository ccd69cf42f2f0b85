"""The generators by themselves: order, uniqueness, layout, clocks, crashes."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sdlab.ids import (
    INSTAGRAM,
    SNOWFLAKE,
    ClockMovedBackwards,
    InvalidId,
    SimpleGenerator,
    Snowflake,
    kinds,
)
from sdlab.ids.simple import StateInUse


def test_snowflake_ids_grow_and_decode_to_now() -> None:
    ids = Snowflake(7)
    made = [ids.next_id() for _ in range(20_000)] + ids.next_ids(20_000)
    made += [ids.next_id() for _ in range(100)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    parts = ids.decode(made[-1])
    assert parts.node == 7
    assert abs(parts.time - datetime.now(UTC)) < timedelta(seconds=2)
    assert made[-1] < 1 << 63  # fits a signed BIGINT


class FakeClock:
    """Nanoseconds that move only when told to (or after `stall` readings)."""

    def __init__(self, ms: int, stall: int | None = None) -> None:
        self.ns = ms * 1_000_000
        self.stall, self.reads = stall, 0

    def __call__(self) -> int:
        self.reads += 1
        if self.stall is not None and self.reads % self.stall == 0:
            self.ns += 1_000_000
        return self.ns


def test_past_4096_ids_in_a_millisecond_it_waits_for_the_next() -> None:
    start = SNOWFLAKE.epoch_ms + 1_000
    clock = FakeClock(start, stall=5_000)  # the clock moves once every 5,000 readings
    ids = Snowflake(1, clock_ns=clock)
    made = [ids.next_id() for _ in range(5_000)]
    assert len(set(made)) == 5_000
    assert made == sorted(made)
    sequences = [SNOWFLAKE.decode(i).sequence for i in made]
    assert max(sequences) == 4095
    assert SNOWFLAKE.decode(made[4096]).sequence == 0  # the next millisecond's first


def test_a_clock_stepping_back_is_waited_out_or_refused() -> None:
    clock = FakeClock(SNOWFLAKE.epoch_ms + 10_000)
    ids = Snowflake(1, clock_ns=clock, max_backwards_ms=50)
    first = ids.next_id()
    clock.ns -= 5 * 1_000_000  # NTP steps back 5 ms

    def catch_up() -> None:
        time.sleep(0.02)
        clock.ns += 6 * 1_000_000

    threading.Thread(target=catch_up).start()
    assert ids.next_id() > first  # it waited
    clock.ns -= 100 * 1_000_000
    with pytest.raises(ClockMovedBackwards, match="100 ms behind"):
        ids.next_id()


def test_threadsafe_snowflake_shared_by_threads_makes_no_duplicate() -> None:
    ids = Snowflake(3, threadsafe=True)
    made: list[list[int]] = [[] for _ in range(4)]

    def work(i: int) -> None:
        made[i] = [ids.next_id() for _ in range(30_000)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [i for part in made for i in part]
    assert len(set(everything)) == 120_000
    assert all(part == sorted(part) for part in made)


def test_bad_machine_ids_are_refused() -> None:
    with pytest.raises(ValueError, match=r"0\.\.1023"):
        Snowflake(1024)
    with pytest.raises(ValueError, match="save_every"):
        SimpleGenerator(1, "/tmp/x", save_every=0)


def test_the_simple_generator_never_reuses_a_counter_after_a_crash(tmp_path: Path) -> None:
    state = tmp_path / "counter"
    first = SimpleGenerator(9, state, save_every=100)
    before = [first.next_id() for _ in range(150)]  # reserved up to 200, then "crash"
    assert first.saves == 2
    with pytest.raises(StateInUse):  # while it lives, nobody else may use its counter
        SimpleGenerator(9, state, save_every=100)
    first.close()  # the process dies: the OS lets go of its lock
    again = SimpleGenerator(9, state, save_every=100)
    after = [again.next_id() for _ in range(10)] + again.next_ids(500)
    assert not set(before) & set(after)
    assert again.decode(after[0]).sequence == 200  # resumes past everything reserved
    assert again.decode(after[0]).node == 9
    assert [again.decode(i).sequence for i in after] == list(range(200, 710))


def test_a_failed_save_hands_out_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    generator = SimpleGenerator(9, tmp_path / "counter", save_every=10)
    made = [generator.next_id() for _ in range(10)]
    real_replace = os.replace

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        generator.next_id()
    with pytest.raises(OSError, match="No space left"):
        generator.next_id()  # still nothing: the counter past 10 was never recorded
    monkeypatch.setattr(os, "replace", real_replace)
    generator.close()
    again = SimpleGenerator(9, tmp_path / "counter", save_every=10)
    assert again.decode(again.next_id()).sequence == 10
    assert len(made) == 10


def test_layouts_decode_and_refuse_what_is_not_theirs() -> None:
    value = INSTAGRAM.compose(1_000, 5, 17)
    parts = INSTAGRAM.decode(value)
    assert (parts.node, parts.sequence) == (5, 17)
    assert parts.time == datetime.fromtimestamp((INSTAGRAM.epoch_ms + 1_000) / 1000, UTC)
    with pytest.raises(InvalidId):
        SNOWFLAKE.decode(1 << 64)
    with pytest.raises(InvalidId):
        SNOWFLAKE.decode(-1)


def test_ulid_and_uuid7_parse_and_decode() -> None:
    import ulid
    import uuid6

    made7 = uuid6.uuid7()
    parts = kinds.KINDS["uuid7"].read(str(made7))
    # Not compared with now: uuid6 runs its clock ahead when called fast in one process
    # (seen 4 s ahead after a million calls), to stay monotonic.
    assert parts.time == datetime.fromtimestamp(made7.time / 1000, UTC)
    made = ulid.ULID()
    assert kinds.KINDS["ulid"].read(str(made)).time == made.datetime
    assert kinds.KINDS["ulid"].read(str(made).lower()).id == int(made)
    assert kinds.KINDS["ulid"].read(str(int(made))).id == int(made)  # the integer, on request
    with pytest.raises(InvalidId, match="not a version 7 UUID"):
        kinds.KINDS["uuid7"].read("6ba7b810-9dad-11d1-80b4-00c04fd430c8")
    with pytest.raises(InvalidId, match="'banana' is not an id: a snowflake id is written in"):
        kinds.KINDS["snowflake"].parse("banana")


def test_ulid_and_uuid7_are_written_as_their_text() -> None:
    import random
    import uuid

    import ulid

    values = [0, 1, (1 << 128) - 1, *(random.getrandbits(128) for _ in range(2_000))]
    values += [kinds.new_ulid() for _ in range(100)]
    # The base32 shortcut against python-ulid's own encoder, bit for bit.
    assert kinds.KINDS["ulid"].texts(values) == [str(ulid.ULID.from_int(v)) for v in values]
    assert all(kinds.KINDS["ulid"].parse(kinds.text("ulid", v)) == v for v in values)
    assert kinds.text("uuid7", values[3]) == str(uuid.UUID(int=values[3]))
    assert kinds.text("snowflake", 2125551808964227073) == "2125551808964227073"
    made = kinds.new_ulid()
    assert len(kinds.text("ulid", made)) == 26
    assert uuid.UUID(kinds.text("uuid7", kinds.new_uuid7())).version == 7


@pytest.mark.parametrize(
    ("kind", "typed", "refusal"),
    [
        # A snowflake id is a small number: as a 1970-epoch id it would say 1970.
        ("ulid", "2125551808964227073", "would date from 1970-01-01T00:00:00.000"),
        ("simple", "2125551808964227073", "would date from 1970-01-01T00:00:00.000"),
        ("uuid7", "2125551808964227073", "not a version 7 UUID"),
        # Text of one kind given as another.
        ("snowflake", "01M8XQGYTJZJA6ZX8HK67E41B7", "is ULID text, as ulid ids are"),
        ("snowflake", "01a23b78-7b52-795b-a47e-6e0432cb7dfa", "is UUID text, as uuid7 ids are"),
        ("ulid", "01a23b78-7b52-795b-a47e-6e0432cb7dfa", "a ulid id is written as ULID text"),
        ("uuid7", "01M8XQGYTJZJA6ZX8HK67E41B7", "ULID text, as ulid ids are \\(--kind ulid\\)"),
        ("instagram", "01M8XQGYTJZJA6ZX8HK67E41B7", "an instagram id is written in decimal"),
        ("snowflake", str(1 << 64), "is not a 63-bit snowflake id"),
        ("ulid", "ZZZZZZZZZZZZZZZZZZZZZZZZZZ", "is not an id"),  # past 128 bits
    ],
)
def test_an_id_that_cannot_be_of_the_kind_is_refused(kind: str, typed: str, refusal: str) -> None:
    with pytest.raises(InvalidId, match=refusal):
        kinds.KINDS[kind].read(typed)


def test_each_kind_reads_back_what_it_writes() -> None:
    for name, made in [
        ("snowflake", Snowflake(3).next_id()),
        ("ulid", kinds.new_ulid()),
        ("uuid7", kinds.new_uuid7()),
        ("instagram", INSTAGRAM.compose(10**9, 5, 17)),
    ]:
        kind = kinds.KINDS[name]
        assert kind.read(kind.text(made)).id == made
        assert kind.read(str(made)).id == made
        assert kind.describe(kind.decode(made))["id"] == kind.text(made)


def test_a_restart_after_the_clock_steps_back_reissues_ids_unless_the_horizon_is_kept(
    tmp_path: Path,
) -> None:
    """50,000 ids over 200 ms, the clock steps back 200 ms, the process restarts with the
    same machine id: without a state file every id comes out again."""

    def run(state: Path | None) -> tuple[list[int], list[int]]:
        clock = FakeClock(SNOWFLAKE.epoch_ms + 10_000_000, stall=250)  # 250 ids a ms

        def start() -> Snowflake:  # a new process: same machine id, same state file
            return Snowflake(5, clock_ns=clock, state=state, max_backwards_ms=500)

        first = start()
        before = [first.next_id() for _ in range(50_000)]
        clock.ns -= 200 * 1_000_000  # NTP steps back while the process restarts
        second = start()
        return before, [second.next_id() for _ in range(50_000)]

    before, after = run(None)
    assert len(set(before) & set(after)) == 50_000  # the hazard: every id again
    before, after = run(tmp_path / "snowflake-5.horizon")
    assert not set(before) & set(after)
    assert min(after) > max(before)


def test_a_restart_far_behind_the_recorded_horizon_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "snowflake-5.horizon"
    clock = FakeClock(SNOWFLAKE.epoch_ms + 10_000_000)
    Snowflake(5, clock_ns=clock, state=state).next_id()
    clock.ns -= 5_000 * 1_000_000  # five seconds back: far more than a restart explains
    with pytest.raises(ClockMovedBackwards, match="behind the horizon recorded in"):
        Snowflake(5, clock_ns=clock, state=state)
