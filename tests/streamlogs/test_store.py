"""The wire format, the files, and the ids: pure logic and the file system."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from sdlab.streamlogs import (
    DeploymentStore,
    InvalidDeploymentId,
    Line,
    UnknownDeployment,
    split_lines,
    sse,
)
from sdlab.streamlogs.store import MAX_LINE
from tests.streamlogs.conftest import parse_events


def decode(stream: bytes) -> list[tuple[str, str, str]]:
    """What a spec-following client (httpx-sse's decoder) makes of `stream`."""
    return [(e.id, e.event, e.data) for e in parse_events(stream)]


def test_an_event_carries_its_id_and_its_line() -> None:
    frame = sse.event("step 1/3 build: ok", id=118)
    assert frame == b"id: 118\ndata: step 1/3 build: ok\n\n"
    assert decode(frame) == [("118", "message", "step 1/3 build: ok")]


def test_carriage_returns_and_empty_lines_survive_the_format() -> None:
    # A CR is a line break to SSE: a progress bar redrawn with "\r" must not cut the
    # event short or leak a field. The client sees "\n" in its place.
    frames = sse.event("10%\r50%\r\ndone", id=1) + sse.event("", id=2) + sse.event("data: x", id=3)
    assert decode(frames) == [
        ("1", "message", "10%\n50%\ndone"),
        ("2", "message", ""),
        ("3", "message", "data: x"),
    ]


def test_the_end_event_comments_and_retry() -> None:
    stream = sse.retry(1500) + sse.comment("keepalive") + sse.event("{}", id=9, event="end")
    assert stream.startswith(b"retry: 1500\n\n: keepalive\n\n")
    assert decode(stream) == [("9", "end", "{}")]
    with pytest.raises(ValueError, match="one line"):
        sse.event("x", id="1\n2")
    with pytest.raises(ValueError, match="one line"):
        sse.event("x", event="end\rnow")


def test_lines_are_cut_at_newlines_and_ids_are_offsets() -> None:
    data = b"one\ntwo\r\n\nthree"
    assert split_lines(data, 100, final=False) == [
        Line(104, "one"),
        Line(109, "two"),
        Line(110, ""),
    ]
    assert split_lines(data, 100, final=True)[-1] == Line(115, "three")


def test_bad_bytes_are_replaced_and_long_lines_cut_between_characters() -> None:
    assert split_lines(b"ok \xff\xfe\n", 0, final=False) == [Line(6, "ok \ufffd\ufffd")]
    long = ("é" * MAX_LINE).encode()  # two bytes a character
    lines = split_lines(long + b"\n", 0, final=False)
    assert "".join(line.text for line in lines) == "é" * MAX_LINE
    assert all(len(line.text.encode()) <= MAX_LINE for line in lines)
    assert lines[-1].end == len(long) + 1
    # An unfinished line shorter than the limit waits for its newline.
    assert split_lines(b"x" * 100, 0, final=False) == []


def test_a_long_line_is_cut_in_the_same_place_however_much_of_it_was_read() -> None:
    """The tail and a client resyncing from the file read a long line in different
    pieces: both must cut it where the other would, or ids would differ. Byte
    MAX_LINE - 1 here is the first byte of an "é"; the cut goes before it."""
    line = ("a" + "é" * MAX_LINE).encode()
    (first, *_) = split_lines(line + b"\n", 0, final=False)
    assert first.end == MAX_LINE - 1
    for read in (MAX_LINE, MAX_LINE + 1, MAX_LINE + 2):
        assert split_lines(line[:read], 0, final=False)[0] == first
    assert "\ufffd" not in first.text


def test_bytes_that_are_not_utf8_are_cut_like_any_other() -> None:
    # A run of continuation bytes (a binary blob in a log) is cut at MAX_LINE, give or
    # take 3, not one byte at a time.
    lines = split_lines(b"\x80" * (2 * MAX_LINE), 0, final=True)
    assert len(lines) == 2
    assert lines[0].end >= MAX_LINE - 3


def test_a_deployment_is_a_folder_with_a_log_and_a_status(tmp_path: Path) -> None:
    store = DeploymentStore(tmp_path)
    deployment = store.create({"lines": 3})
    assert store.get(deployment.id).status().state == "running"
    end = deployment.append("first", "second\nthird")
    assert end == deployment.size() == len(b"first\nsecond\nthird\n")
    assert [line.text for line in deployment.read(0, end)] == ["first", "second", "third"]
    status = deployment.finish()
    assert status.state == "finished"
    assert status.ended is not None
    assert store.get(deployment.id).status().plan == {"lines": 3}
    time.sleep(0.002)  # ids and times are per millisecond
    later = store.create()
    assert [s.id for s in store.list()] == [later.id, deployment.id]  # newest first


@pytest.mark.parametrize(
    "bad",
    ["..", ".", "../etc", "a/b", "a\\b", "..%2f", "", "x" * 65, "-rf", "a b", "a\x00b", "é"],
)
def test_ids_that_could_leave_the_data_directory_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InvalidDeploymentId, match="not a deployment id"):
        DeploymentStore(tmp_path).get(bad)


def test_a_symlink_out_of_the_data_directory_is_no_deployment(tmp_path: Path) -> None:
    outside = DeploymentStore(tmp_path / "outside").create()
    store = DeploymentStore(tmp_path / "data")
    os.symlink(outside.path, store.root / "sneaky")
    with pytest.raises(UnknownDeployment):
        store.get("sneaky")
    assert store.list() == []
    with pytest.raises(UnknownDeployment, match="no deployment 'nothing-here'"):
        store.get("nothing-here")


def test_event_ids_are_the_start_and_line_ends(tmp_path: Path) -> None:
    deployment = DeploymentStore(tmp_path).create()
    deployment.append("alpha", "beta")  # ends at 6 and 11
    assert [deployment.is_event_id(n) for n in (0, 6, 11)] == [True, True, True]
    assert [deployment.is_event_id(n) for n in (3, 7, 12, -1)] == [False] * 4
    with deployment.log_path.open("ab") as log:
        log.write(b"unfinished")  # ends at 21
    assert not deployment.is_event_id(21)  # not a line yet: the writer may add to it
    deployment.finish()
    assert deployment.is_event_id(21)  # the last line of an ended log: it was sent
