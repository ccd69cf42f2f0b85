"""Deployments on disk: one folder each, holding the log and a status file.

    <data dir>/<deployment id>/log           lines appended as the deployment runs
    <data dir>/<deployment id>/status.json   {"id", "state", "created", "ended", "plan", "reason"}

The log is the truth: servers come and go, the files stay. A line's position in the
stream is its byte offset: the event id of a line is the offset just past it, so a
client that last saw id N resumes by reading the file from byte N, with no index.

Whoever writes a deployment (the mock runner here, a build runner in real life) appends
whole lines and, at the end, replaces the status file (write a temporary file, then
rename): a reader that sees the final state and then reads the log to its end has
every line. A writer `claim()`s the deployment first, so that two never write one log.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple, NoReturn

from ulid import ULID

log = logging.getLogger(__name__)

State = Literal["running", "finished", "failed"]
ENDED: tuple[State, ...] = ("finished", "failed")

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
"""Letters, digits, '-' and '_': no '/', no '.', so an id never leaves the data directory."""
_ID = re.compile(ID_PATTERN)

MAX_LINE = 64 * 1024
"""Longer lines are cut into events of this many bytes, so that memory stays bounded
whatever a deployment prints."""

NEWLINE = ord("\n")

LOG = "log"
STATUS = "status.json"


class StreamLogsError(Exception):
    """Base class of the errors a user of sdlab.streamlogs can meet."""


class InvalidDeploymentId(StreamLogsError, ValueError):
    """Not a deployment id: wrong characters or length, or a path out of the data dir."""


class UnknownDeployment(StreamLogsError, LookupError):
    """A well-formed id that names no deployment."""


class BrokenDeployment(StreamLogsError):
    """A deployment's folder whose `status.json` is missing or malformed, or that has no
    log: listed as broken, never streamed."""


class LogFull(StreamLogsError):
    """An append that would take a log past its size limit (nothing was written)."""


class DeploymentRunning(StreamLogsError):
    """A running deployment cannot be deleted: its writer still appends to it."""


class Line(NamedTuple):
    """One line of a log: the text, and the byte offset just past it (its event id).
    A line longer than MAX_LINE comes as several: all but the first `continue` the one
    before (the stream sends them as `event: more`, for the client to append)."""

    end: int
    text: str
    continues: bool = False


@dataclass(frozen=True)
class Status:
    """What `status.json` says about a deployment."""

    id: str
    state: State
    created: str
    ended: str | None = None
    plan: Mapping[str, Any] = field(default_factory=dict)
    """How the deployment was asked for (the mock runner's lines and interval)."""
    reason: str | None = None
    """Why it ended as it did, when there is more to say (a log that hit its limit)."""

    @property
    def done(self) -> bool:
        return self.state in ENDED

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "created": self.created,
            "ended": self.ended,
            "plan": dict(self.plan),
            "reason": self.reason,
        }


class Broken(NamedTuple):
    """A folder in the data directory that should be a deployment and is not a whole one."""

    id: str
    problem: str

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "state": "broken", "problem": self.problem}


class Listing(NamedTuple):
    """What the data directory holds: deployments (newest first) with their log's size,
    and the broken folders (by id)."""

    deployments: list[tuple[Status, int]]
    broken: list[Broken]


def check_id(deployment_id: str) -> str:
    """`deployment_id` if it is a valid id, else InvalidDeploymentId."""
    if not isinstance(deployment_id, str) or not _ID.fullmatch(deployment_id):
        raise InvalidDeploymentId(
            f"not a deployment id: {deployment_id!r:.80} (1-64 letters, digits, '-' or '_')"
        )
    return deployment_id


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Deployment:
    """One deployment's folder. Cheap to make: nothing is opened until asked."""

    def __init__(self, root: Path, deployment_id: str) -> None:
        self.id = check_id(deployment_id)
        self.path = root / deployment_id
        self.log_path = self.path / LOG
        self.status_path = self.path / STATUS

    def __repr__(self) -> str:
        return f"Deployment({self.id!r})"

    def status(self) -> Status:
        """What `status.json` says: BrokenDeployment if it is missing or malformed."""
        try:
            data = json.loads(self.status_path.read_bytes())
        except FileNotFoundError:
            self._missing("status.json")
        except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError too
            problem = f"deployment {self.id!r}: unreadable status.json: {exc}"
            raise BrokenDeployment(problem) from None
        try:
            status = Status(
                id=self.id,
                state=data["state"],
                created=data["created"],
                ended=data.get("ended"),
                plan=data.get("plan") or {},
                reason=data.get("reason"),
            )
            valid = (
                status.state in ("running", *ENDED)
                and isinstance(status.created, str)
                and isinstance(status.ended, str | None)
                and isinstance(status.plan, dict)
                and isinstance(status.reason, str | None)
            )
        except (KeyError, TypeError, AttributeError):
            valid = False
        if not valid:
            raise BrokenDeployment(
                f"deployment {self.id!r}: malformed status.json "
                "(it needs a state of running, finished or failed and a created time)"
            )
        return status

    def size(self) -> int:
        """Bytes in the log now."""
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            self._missing("log")

    def _missing(self, name: str) -> NoReturn:
        if not self.path.is_dir():
            raise UnknownDeployment(f"no deployment {self.id!r}")
        raise BrokenDeployment(f"deployment {self.id!r}: its folder has no {name}")

    def append(self, *lines: str, max_size: int | None = None) -> int:
        """Append whole lines in one write (O_APPEND); return the log's new size. A
        "\n" inside a line starts another line. LogFull, and nothing written, if the log
        would grow past `max_size` bytes (the check and the write are one step for the
        deployment's one writer, not between writers)."""
        data = "".join(f"{line}\n" for line in lines).encode()
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND)
        try:
            if max_size is not None and os.fstat(fd).st_size + len(data) > max_size:
                raise LogFull(
                    f"deployment {self.id!r}: its log reached its limit of {max_size:,} bytes"
                )
            os.write(fd, data)
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def claim(self) -> int | None:
        """The right to write this deployment, if no one has it (in this process or
        another): a file descriptor holding a lock on the log, to close when done; None
        if another writer holds it. The kernel lets go of it if the process dies."""
        fd = os.open(self.log_path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def finish(self, state: State = "finished", reason: str | None = None) -> Status:
        """Mark the deployment ended (and why, if `reason`). Call after its last line
        is appended."""
        if state not in ENDED:
            raise ValueError(f"a deployment ends as one of {ENDED}, not {state!r}")
        return self._write_status(self.status(), state=state, ended=now(), reason=reason)

    def read(self, start: int, end: int, *, final: bool = False) -> list[Line]:
        """The lines in bytes [start, end) of the log. `final`: `end` is the end of the
        log for good, so a last line without "\\n" is complete too."""
        with open(self.log_path, "rb") as log:
            log.seek(start)
            return split_lines(log.read(max(end - start, 0)), start, final=final)

    def is_event_id(self, offset: int) -> bool:
        """Whether a stream of this log can have sent `offset` as an event id: the start,
        the end of a line (the end of an ended log too: its last line may lack its
        "\n"), or a place where `split_lines` cuts a line longer than MAX_LINE.
        Resuming anywhere else would start mid-line."""
        if offset == 0:
            return True
        size = self.size()
        if not 0 < offset <= size:
            return False
        if offset == size and self.status().done:
            return True
        with open(self.log_path, "rb") as log:
            fd = log.fileno()
            if os.pread(fd, 1, offset - 1) == b"\n":
                return True
            position = _line_start(fd, offset)
            # Walk the long line's cuts from its start, as split_lines makes them.
            while position < offset:
                piece = os.pread(fd, MAX_LINE, position)
                if len(piece) < MAX_LINE or b"\n" in piece:
                    return False  # the line ends (or the log stops) before any cut
                position += _cut(piece, 0, MAX_LINE)
            return position == offset

    def _write_status(self, status: Status, **changes: Any) -> Status:
        updated = Status(**{**status.as_dict(), **changes})
        temporary = self.status_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(updated.as_dict()))
        os.replace(temporary, self.status_path)  # readers see the old file or the new one
        return updated


class DeploymentStore:
    """Every deployment under one data directory."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._reported: set[Broken] = set()  # broken folders already logged

    def create(self, plan: Mapping[str, Any] | None = None) -> Deployment:
        """A new, running deployment with an empty log. Ids are ULIDs: unique, and
        sorted by creation time. The folder is made under a name that is no id (a
        leading '.') and renamed whole, so no one ever lists a half-made deployment."""
        deployment = Deployment(self.root, str(ULID()).lower())
        staging = self.root / f".new-{deployment.id}"
        staging.mkdir()
        (staging / LOG).touch()
        status = Status(id=deployment.id, state="running", created=now(), plan=dict(plan or {}))
        (staging / STATUS).write_text(json.dumps(status.as_dict()))
        os.rename(staging, deployment.path)
        return deployment

    def get(self, deployment_id: str) -> Deployment:
        """The deployment called `deployment_id`: InvalidDeploymentId if that cannot be
        an id, UnknownDeployment if there is none."""
        deployment = Deployment(self.root, deployment_id)
        # The id's characters keep it inside the root; a symlink planted in the data
        # directory could still lead out, so the folder must really be here. (A folder
        # without its status or its log is a broken deployment: see `scan`.)
        if deployment.path.resolve().parent != self.root or not deployment.path.is_dir():
            raise UnknownDeployment(f"no deployment {deployment_id!r}")
        return deployment

    def delete(self, deployment_id: str) -> None:
        """Remove a deployment's folder, log and all; DeploymentRunning if it is running
        (a broken one can be deleted). The folder is renamed out of sight first, so no
        one lists or opens it half-removed; its followers' streams end (inotify)."""
        deployment = self.get(deployment_id)
        with suppress(BrokenDeployment):
            if deployment.status().state == "running":
                raise DeploymentRunning(
                    f"deployment {deployment.id!r} is running: delete it once it has ended"
                )
        doomed = self.root / f".deleted-{deployment.id}-{ULID()}"
        os.rename(deployment.path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def prune(self, keep: int) -> list[str]:
        """The retention rule: delete the ended deployments beyond the newest `keep`
        (by creation); return their ids. Running and broken ones are left alone."""
        self._sweep()
        ended = [status.id for status in self.list() if status.done]
        gone = []
        for deployment_id in ended[keep:]:
            with suppress(StreamLogsError, FileNotFoundError):  # someone else was quicker
                self.delete(deployment_id)
                gone.append(deployment_id)
        return gone

    def _sweep(self, *, after: float = 60.0) -> None:
        """Remove what a crashed process left half-done: a folder renamed for deletion
        and not removed, or one made for a new deployment and not renamed into place
        within `after` seconds."""
        for path in self.root.iterdir():
            with suppress(OSError):  # renamed or removed meanwhile, by its owner
                stale = path.name.startswith(".deleted-") or (
                    path.name.startswith(".new-") and time.time() - path.stat().st_mtime > after
                )
                if stale and path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)

    def list(self) -> list[Status]:
        """Every whole deployment's status, newest first (broken ones left out)."""
        return [status for status, _ in self.scan().deployments]

    def scan(self) -> Listing:
        """Every folder named like a deployment: whole ones with their log's size, and
        broken ones, each logged once per process (one bad folder must not take the
        listing down for everyone). Files and other names are not deployments."""
        deployments, broken = [], []
        for path in self.root.iterdir():
            try:
                deployment = self.get(path.name)
                status = deployment.status()
                deployments.append((status, deployment.size()))
            except BrokenDeployment as exc:
                broken.append(Broken(path.name, str(exc)))
            except StreamLogsError:
                continue  # a stray file, a name that is no id, a folder just deleted
        for fault in broken:
            if fault not in self._reported:
                self._reported.add(fault)
                log.warning("%s: listed as broken", fault.problem)
        deployments.sort(key=lambda found: found[0].created, reverse=True)
        return Listing(deployments, sorted(broken))


def split_lines(
    data: bytes,
    base: int,
    *,
    final: bool,
    max_line: int = MAX_LINE,
    most: int | None = None,
    continues: bool = False,
) -> list[Line]:
    """Cut `data` (read from byte `base` of a log) into lines, `most` of them at most.

    A line ends at "\\n", or after `max_line` bytes (at a UTF-8 character boundary), and
    then the next one `continues` it; `continues` says whether `base` is such a cut. An
    unfinished last line is left for the next read, unless `final`. Text is decoded as
    UTF-8 with bad bytes replaced, and loses its "\\n" (or "\\r\\n")."""
    lines: list[Line] = []
    position, size = 0, len(data)
    while position < size and len(lines) != most:
        newline = data.find(b"\n", position, position + max_line)
        if newline >= 0:
            end = newline + 1
        elif size - position >= max_line:
            end = _cut(data, position, position + max_line)
        elif final:
            end = size
        else:
            break
        text = data[position:end].decode("utf-8", "replace")
        if text.endswith("\n"):
            text = text[:-2] if text.endswith("\r\n") else text[:-1]
        lines.append(Line(base + end, text, continues))
        continues = data[end - 1] != NEWLINE
        position = end
    return lines


def _line_start(fd: int, offset: int) -> int:
    """The offset just past the last "\\n" before `offset` in the file (0 if none)."""
    end = offset
    while end > 0:
        start = max(0, end - 256 * 1024)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


def _cut(data: bytes, start: int, end: int) -> int:
    """Where to cut a long line that begins at `start`: at `end`, or before the UTF-8
    character that a cut at `end` would split (3 bytes back at most). Only the bytes
    before `end` are looked at, so the cut is the same however much of the line has
    been read; bytes that are not UTF-8 are cut at `end`."""
    for lead in range(end - 1, max(start, end - 4), -1):
        byte = data[lead]
        if byte & 0xC0 != 0x80:  # not a continuation byte: the last character starts here
            length = 1 if byte < 0x80 else 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return lead if lead + length > end else end
    return end
