"""MULTI and WATCH's state as units: which writes mark which watchers, and the keys each
write names (no server, no database)."""

from __future__ import annotations

from sdlab.kv import ops
from sdlab.kv.transaction import Watch, Watches


def test_a_write_marks_the_watchers_of_its_keys_only() -> None:
    watches = Watches()
    ours, theirs = Watch(), Watch()
    ours.seen = {b"a": None, b"b": (b"1", None)}
    theirs.seen = {b"c": None}
    watches.add(ours, ours.seen)
    watches.add(theirs, theirs.seen)
    watches.touch(ops.Put(((b"x", b"1", None), (b"b", b"2", None))))
    assert (ours.touched, theirs.touched) == (True, False)
    watches.touch(ops.Delete((b"c",)))
    assert theirs.touched
    watches.remove(ours)
    watches.remove(theirs)
    assert not watches  # nothing left behind: no key, no watcher


def test_each_write_names_the_keys_it_may_write() -> None:
    steps: tuple[ops.Step, ...] = (
        ops.Put(((b"p", b"v", None),)),
        ops.SetIf(b"s", b"v", None, nx=True),
        ops.Incr(b"i", 1),
        ops.Delete((b"d1", b"d2")),
        ops.Expire(b"e", 1),
        ops.Persist(b"n"),
        ops.Read(ops.get, (b"r",)),  # a read writes nothing
    )
    assert list(ops.Transaction((), steps).written()) == [
        b"p", b"s", b"i", b"d1", b"d2", b"e", b"n",
    ]  # fmt: skip


def test_the_state_watch_remembers_is_gone_once_expired_or_deleted() -> None:
    assert ops.state([(b"v", None)], now=100) == (b"v", None)
    assert ops.state([(b"v", 200)], now=100) == (b"v", 200)
    assert ops.state([(b"v", 100)], now=100) is None  # expired
    assert ops.state([(b"v", -1)], now=100) is None  # deleted
    assert ops.state([], now=100) is None
