"""Run several sessions' statements in a given interleaving, and record what happened.

    steps = [Step("T1", "BEGIN"), Step("T1", "SELECT * FROM test WHERE id = 1 FOR UPDATE"),
             Step("T2", "BEGIN"), Step("T2", "SELECT * FROM test WHERE id = 1 FOR UPDATE"),
             Step("T1", "COMMIT"), Step("T2", "COMMIT")]
    timeline = await run(url, steps)
    timeline.events[3].waited_for      # ('T1',): the server said T2 waited for T1

How a run goes, as two people at two terminals would do it: each session is a real
connection of its own (`sdlab.sql.connect`); the steps are sent in order. A step that
has not returned within `bound` is not assumed blocked: the server is asked
(`waits.LockWaits`), and the run moves on only once every unfinished statement is either
done or seen waiting on a lock, so the next step meets the same state on every run. A
step for a session whose last statement has not returned waits for it first (a person
cannot type into a blocked terminal). Every statement is recorded as an `Event`: when
it started and ended, whom it waited for, and how it ended: rows, a row count, or the
name of the `sdlab.sql` error (`Deadlock`, `LockWaitTimeout`, `SerializationFailure`).

Lock waits are kept short (`lock_timeout` on every session: MariaDB's
innodb_lock_wait_timeout and lock_wait_timeout, PostgreSQL's lock_timeout) so that a
script that expects the wrong thing fails in a second or two instead of hanging.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sdlab import sql
from sdlab.locking.waits import LockWaits

Engine = str  # "mariadb" or "postgresql"


LOCK_TIMEOUT: dict[Engine, float] = {"mariadb": 1.0, "postgresql": 2.0}
"""Seconds a lock is waited for. PostgreSQL's must exceed its deadlock_timeout (1 s by
default), or a deadlock would end as a lock timeout before the server looked for it."""


UNKNOWN = "?"
"""Whom a statement waits for when the server says it waits but not for whom."""


class Stuck(RuntimeError):
    """A statement neither returned nor waited on a lock the server could see, long
    after its lock timeout: the script, not the database, is wrong."""


@dataclass(frozen=True)
class Step:
    """One statement typed into one session. `sql` may differ by engine."""

    session: str
    sql: str | Mapping[Engine, str]
    name: str = ""
    """How checks and expectations refer to this step (empty: they do not)."""

    def text(self, engine: Engine) -> str:
        return self.sql if isinstance(self.sql, str) else self.sql[engine]


def T1(statement: str | Mapping[Engine, str], name: str = "") -> Step:
    """A step of session T1 (and T2, T3 likewise): scripts read like Hermitage's."""
    return Step("T1", statement, name)


def T2(statement: str | Mapping[Engine, str], name: str = "") -> Step:
    return Step("T2", statement, name)


def T3(statement: str | Mapping[Engine, str], name: str = "") -> Step:
    return Step("T3", statement, name)


@dataclass
class Event:
    """What one step did."""

    index: int
    step: Step
    sql: str
    started: float
    """Seconds since the run began."""
    ended: float | None = None
    rows: list[tuple[Any, ...]] | None = None
    rowcount: int | None = None
    error: str | None = None
    """The `sdlab.sql` error's class name (`Deadlock`, ...), None if it succeeded."""
    message: str = ""
    waited_for: tuple[str, ...] = ()
    """The sessions the server showed this statement waiting for, in the order seen."""

    @property
    def session(self) -> str:
        return self.step.session

    @property
    def blocked(self) -> bool:
        return bool(self.waited_for)

    @property
    def seconds(self) -> float:
        return (self.ended if self.ended is not None else math.nan) - self.started

    def summary(self) -> str:
        """How it went, in words: `waited 812 ms for T1, then 1 row: (1, 11)`."""
        if self.error:
            end = f"{self.error}"
        elif self.rows is not None:
            shown = ", ".join(_row(r) for r in self.rows[:4]) + (
                " ..." if len(self.rows) > 4 else ""
            )
            end = f"{self.outcome}: {shown}" if self.rows else "no rows"
        elif self.rowcount is not None and self.rowcount >= 0 and not _is_control(self.sql):
            end = f"{self.rowcount} row{'' if self.rowcount == 1 else 's'} changed"
        else:
            end = "ok"
        if self.blocked:
            return (
                f"waited {self.seconds * 1000:.0f} ms for {', '.join(self.waited_for)}, then {end}"
            )
        return end

    @property
    def outcome(self) -> str:
        """`ok`, `N rows`, or the error's name."""
        if self.error:
            return self.error
        if self.rows is not None:
            return f"{len(self.rows)} row{'' if len(self.rows) == 1 else 's'}"
        return "ok"


@dataclass
class Timeline:
    """One run: its sessions (in the order they first appear) and their events."""

    engine: Engine
    level: str
    sessions: list[str]
    events: list[Event] = field(default_factory=list)

    def event(self, name: str) -> Event:
        """The event of the step called `name`."""
        for event in self.events:
            if event.step.name == name:
                return event
        raise KeyError(f"no step called {name!r}")

    def errors(self) -> list[str]:
        return [e.error for e in self.events if e.error]


def sessions_of(steps: Iterable[Step]) -> list[str]:
    return list(dict.fromkeys(step.session for step in steps))


async def run(
    url: str,
    steps: Sequence[Step],
    *,
    isolation: sql.Isolation | None = None,
    level: str | None = None,
    settings: Sequence[str] = (),
    setup: Sequence[str] = (),
    lock_timeout: float | None = None,
    bound: float = 0.05,
) -> Timeline:
    """Run `steps` in order on one new session per session name, at `isolation` (None:
    the server's default), after `setup` (run first, on a session of its own).
    `settings`: more statements for every session (`SET SESSION ...`). `level` names
    the run in the timeline (default: the isolation level). `lock_timeout`: seconds
    (default `LOCK_TIMEOUT[engine]`)."""
    engine = sql.dialect_for(url).engine
    lock_timeout = LOCK_TIMEOUT[engine] if lock_timeout is None else lock_timeout
    monitor = await sql.connect(url, isolation=None)
    opened: dict[str, sql.Session] = {}
    try:
        for statement in setup:
            await monitor.run(statement)
        for name in sessions_of(steps):
            opened[name] = await _open(url, isolation, settings, lock_timeout)
        names = {await session.server_id(): name for name, session in opened.items()}
        timeline = Timeline(engine, level or isolation or "default", list(opened))
        runner = _Runner(timeline, opened, names, LockWaits(monitor), bound, lock_timeout)
        await runner.play(steps)
        return timeline
    finally:
        for session in opened.values():
            await session.close()  # a transaction still open is rolled back by the server
        await monitor.close()


async def _open(
    url: str, isolation: sql.Isolation | None, settings: Sequence[str], lock_timeout: float
) -> sql.Session:
    session = await sql.connect(url, isolation=isolation)
    try:
        if session.dialect.engine == "mariadb":
            seconds = max(1, math.ceil(lock_timeout))  # both are whole seconds
            await session.run(
                f"SET SESSION innodb_lock_wait_timeout = {seconds}, lock_wait_timeout = {seconds}"
            )
        else:
            await session.run(f"SET lock_timeout = '{int(lock_timeout * 1000)}ms'")
        for statement in settings:
            await session.run(statement)
    except BaseException:
        await session.close()
        raise
    return session


class _Runner:
    def __init__(
        self,
        timeline: Timeline,
        sessions: Mapping[str, sql.Session],
        names: Mapping[int, str],
        waits: LockWaits,
        bound: float,
        lock_timeout: float,
    ) -> None:
        self.timeline = timeline
        self.sessions = sessions
        self.names = dict(names)
        self.ids = {name: sid for sid, name in names.items()}
        self.waits = waits
        self.bound = bound
        # A lock wait ends by its timeout; PostgreSQL's deadlock check runs after
        # deadlock_timeout (1 s by default). Longer than both: something is wrong.
        self.patience = lock_timeout + 5.0
        self.pending: dict[str, tuple[asyncio.Task[None], Event]] = {}
        self.began = time.monotonic()

    def _now(self) -> float:
        return time.monotonic() - self.began

    async def play(self, steps: Sequence[Step]) -> None:
        try:
            for index, step in enumerate(steps):
                if step.session in self.pending:
                    await self._finish(step.session)
                self._start(index, step)
                await self._settle()
            for name in list(self.pending):
                await self._finish(name)
        finally:
            for task, _ in self.pending.values():
                task.cancel()

    def _start(self, index: int, step: Step) -> None:
        event = Event(index, step, step.text(self.timeline.engine), self._now())
        self.timeline.events.append(event)
        task = asyncio.create_task(self._execute(self.sessions[step.session], event))
        self.pending[step.session] = (task, event)

    async def _execute(self, session: sql.Session, event: Event) -> None:
        try:
            result = await session.run(event.sql)
            event.rowcount = result.rowcount
            if _returns_rows(event.sql):
                event.rows = [tuple(row) for row in result.rows]
        except sql.SQLError as exc:
            event.error = type(exc).__name__
            event.message = str(exc)
        finally:
            event.ended = self._now()

    async def _finish(self, name: str) -> None:
        """Wait for session `name`'s statement to end (it may be waiting on a lock)."""
        task, event = self.pending[name]
        deadline = time.monotonic() + self.patience
        while not task.done():
            await asyncio.wait([task], timeout=self.bound)
            if not task.done():
                await self._look()
            if time.monotonic() > deadline:
                raise Stuck(f"{name}: {event.sql!r} has not returned in {self.patience:.0f} s")
        self._reap()

    async def _settle(self) -> None:
        """Return once every unfinished statement is done or seen waiting on a lock."""
        deadline = time.monotonic() + self.patience
        while self.pending:
            tasks = [task for task, _ in self.pending.values()]
            await asyncio.wait(tasks, timeout=self.bound)
            self._reap()
            if not self.pending:
                return
            waiting = await self._look()
            self._reap()
            if all(name in waiting for name in self.pending):
                return
            if time.monotonic() > deadline:
                stuck = ", ".join(f"{n}: {e.sql!r}" for n, (_, e) in self.pending.items())
                raise Stuck(f"neither done nor waiting on a lock: {stuck}")

    async def _look(self) -> set[str]:
        """Ask the server who waits; note it on the waiters' events. The names waiting."""
        waiting = await self.waits.waiting(self.ids.values())
        seen = set()
        for sid, blockers in waiting.items():
            name = self.names[sid]
            if name not in self.pending:
                continue
            _, event = self.pending[name]
            if event.ended is not None:
                continue
            seen.add(name)
            held_by = [self.names.get(b, f"session {b}") for b in sorted(blockers)]
            if held_by and event.waited_for == (UNKNOWN,):
                event.waited_for = ()
            if not held_by and not event.waited_for:
                held_by = [UNKNOWN]  # waiting, the holder not known (yet)
            event.waited_for += tuple(h for h in held_by if h not in event.waited_for)
        return seen

    def _reap(self) -> None:
        for name, (task, _) in list(self.pending.items()):
            if task.done():
                task.result()  # a bug in a step (not an SQL error) surfaces here
                del self.pending[name]


def _row(row: tuple[Any, ...]) -> str:
    return "(" + ", ".join(str(v) for v in row) + ")"


def _is_control(statement: str) -> bool:
    return statement.split(None, 1)[0].upper() in {"BEGIN", "COMMIT", "ROLLBACK", "SET", "START"}


def _returns_rows(statement: str) -> bool:
    return statement.lstrip().split(None, 1)[0].upper() in {"SELECT", "WITH", "TABLE", "VALUES"}
