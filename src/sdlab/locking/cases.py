"""The locking cases, as data: sessions' steps in order, and what each engine does.

The seed ran three by hand in two MySQL terminals: two inserts that do not wait, a
`SELECT ... FOR UPDATE` that makes another `FOR UPDATE` wait while a plain `SELECT` reads
on (MVCC), and two transactions updating two rows in opposite orders (a deadlock the
server breaks by rolling one back). The rest show the other ways to ask for a row lock
and what they cost: NOWAIT, SKIP LOCKED, a lock-wait timeout, MariaDB's gap locks,
shared locks, and an insert of a key another transaction is inserting.

Every case starts from the table `test (id, value)` holding (1, 10), (2, 20), (5, 50),
at each engine's default isolation level (MariaDB REPEATABLE READ, PostgreSQL READ
COMMITTED) unless it says otherwise. A step not named in `expect` is expected to return
at once and succeed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sdlab import sql
from sdlab.locking import scheduler
from sdlab.locking.scheduler import T1, T2, T3, Engine, Step, Timeline

ENGINES: tuple[Engine, ...] = ("mariadb", "postgresql")

SETUP = (
    "DROP TABLE IF EXISTS test",
    "CREATE TABLE test (id int PRIMARY KEY, value int)",
    "INSERT INTO test (id, value) VALUES (1, 10), (2, 20), (5, 50)",
)


@dataclass(frozen=True)
class Expect:
    """What a step should do: wait for a session (or not), then end ok or with an error."""

    waits_for: str | None = None
    ends: str = "ok"
    """`ok`, or the name of the `sdlab.sql` error (`Deadlock`, `LockWaitTimeout`, ...)."""
    rows: tuple[tuple[Any, ...], ...] | None = None
    """The rows it returns, if that is part of the point."""


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    steps: tuple[Step, ...]
    expect: Mapping[str, Expect] = field(default_factory=dict)
    """By step name, on both engines."""
    differs: Mapping[Engine, Mapping[str, Expect]] = field(default_factory=dict)
    """By engine, then step name: where an engine does otherwise (wins over `expect`)."""
    isolation: sql.Isolation | None = None
    lesson: str = ""

    def expected(self, engine: Engine, step: Step) -> Expect:
        if step.name in self.differs.get(engine, {}):
            return self.differs[engine][step.name]
        return self.expect.get(step.name, Expect())


def check(case: Case, timeline: Timeline) -> list[str]:
    """How the run differs from what the case expects (empty: as expected)."""
    problems = []
    for event in timeline.events:
        want = case.expected(timeline.engine, event.step)
        said = f"step {event.index + 1} ({event.session}: {event.sql})"
        blockers = set(event.waited_for)
        if want.waits_for is None and blockers:
            problems.append(f"{said} waited for {', '.join(event.waited_for)}")
        if want.waits_for is not None and want.waits_for not in blockers:
            problems.append(f"{said} did not wait for {want.waits_for}")
        ended = event.error or "ok"
        if ended != want.ends:
            problems.append(f"{said} ended {ended}, not {want.ends}: {event.message}")
        if want.rows is not None and tuple(event.rows or ()) != want.rows:
            problems.append(f"{said} returned {event.rows}, not {list(want.rows)}")
    return problems


BEGIN = "BEGIN"
COMMIT = "COMMIT"

INSERTS = Case(
    "inserts",
    "Two transactions insert different rows at once: neither waits",
    (
        T1(BEGIN),
        T2(BEGIN),
        T1("INSERT INTO test (id, value) VALUES (3, 30)"),
        T2("INSERT INTO test (id, value) VALUES (4, 40)"),
        T1(COMMIT),
        T2(COMMIT),
    ),
    lesson="An insert locks only the new row (and on MariaDB an insert-intention lock "
    "on the gap, which other inserts share), so inserts of different keys run side by side.",
)

FOR_UPDATE = Case(
    "for-update",
    "T1 locks a row FOR UPDATE: T2's plain SELECT reads on, T2's FOR UPDATE waits",
    (
        T1(BEGIN),
        T1("SELECT * FROM test WHERE id = 1 FOR UPDATE", "T1 locks"),
        T2(BEGIN),
        T2("SELECT * FROM test WHERE id = 1", "T2 reads"),
        T2("SELECT * FROM test WHERE id = 1 FOR UPDATE", "T2 locks"),
        T1("UPDATE test SET value = 11 WHERE id = 1"),
        T1(COMMIT),
        T2(COMMIT),
    ),
    expect={
        "T1 locks": Expect(rows=((1, 10),)),
        "T2 reads": Expect(rows=((1, 10),)),
        "T2 locks": Expect(waits_for="T1", rows=((1, 11),)),
    },
    lesson="A plain SELECT reads a snapshot (MVCC) and takes no lock; a locking read "
    "waits for the row's lock and then reads the latest committed version, even at "
    "REPEATABLE READ on MariaDB (T2 sees 11 there, though its snapshot says 10).",
)

DEADLOCK = Case(
    "deadlock",
    "T1 updates row 1 then 2, T2 row 2 then 1: the server breaks the cycle",
    (
        T1(BEGIN),
        T2(BEGIN),
        T1("UPDATE test SET value = 11 WHERE id = 1"),
        T2("UPDATE test SET value = 22 WHERE id = 2"),
        T1("UPDATE test SET value = 12 WHERE id = 2", "T1 row 2"),
        T2("UPDATE test SET value = 21 WHERE id = 1", "T2 row 1"),
        T1(COMMIT),
        T2(COMMIT),
        T3("SELECT * FROM test ORDER BY id", "after"),
    ),
    differs={
        # InnoDB checks for a cycle as a lock wait begins: the statement that closes it
        # is rolled back at once (here, of two equal transactions, the requester).
        "mariadb": {
            "T1 row 2": Expect(waits_for="T2"),
            "T2 row 1": Expect(ends="Deadlock"),
            "after": Expect(rows=((1, 11), (2, 12), (5, 50))),
        },
        # PostgreSQL looks for a cycle only after deadlock_timeout (1 s) of waiting, and
        # the backend that looks is the one rolled back: the first to wait.
        "postgresql": {
            "T1 row 2": Expect(waits_for="T2", ends="Deadlock"),
            "T2 row 1": Expect(waits_for="T1"),
            "after": Expect(rows=((1, 21), (2, 22), (5, 50))),
        },
    },
    lesson="Neither waits forever: the server finds the cycle and rolls one transaction "
    "back with a deadlock error; the other goes on and commits. Which one differs: "
    "MariaDB the one whose request closed the cycle, at once; PostgreSQL the first to "
    "wait, after deadlock_timeout. Locking rows in one order (by id) avoids it.",
)

NOWAIT = Case(
    "nowait",
    "T2 asks for a locked row with NOWAIT: an error at once, no wait",
    (
        T1(BEGIN),
        T1("SELECT * FROM test WHERE id = 1 FOR UPDATE"),
        T2(BEGIN),
        T2("SELECT * FROM test WHERE id = 1 FOR UPDATE NOWAIT", "T2 nowait"),
        T1(COMMIT),
        T2("ROLLBACK"),
    ),
    expect={"T2 nowait": Expect(ends="LockWaitTimeout")},
    lesson="NOWAIT turns a wait into an error (MariaDB 1205, PostgreSQL 55P03), for "
    "callers that would rather try something else than queue.",
)

SKIP_LOCKED = Case(
    "skip-locked",
    "T2 asks for rows FOR UPDATE SKIP LOCKED: it gets the ones T1 has not locked",
    (
        T1(BEGIN),
        T1("SELECT * FROM test WHERE id = 1 FOR UPDATE"),
        T2(BEGIN),
        T2("SELECT * FROM test ORDER BY id LIMIT 2 FOR UPDATE SKIP LOCKED", "T2 skips"),
        T1(COMMIT),
        T2(COMMIT),
    ),
    expect={"T2 skips": Expect(rows=((2, 20), (5, 50)))},
    lesson="SKIP LOCKED is the queue's friend: each worker takes rows nobody holds "
    "(seat check-in, job queues) without waiting or failing.",
)

LOCK_WAIT_TIMEOUT = Case(
    "lock-timeout",
    "T2 waits for T1's row past its lock timeout; what is left of T2 differs by engine",
    (
        T1(BEGIN),
        T1("UPDATE test SET value = 11 WHERE id = 1"),
        T2(BEGIN),
        T2("UPDATE test SET value = 22 WHERE id = 2", "T2 row 2"),
        T2("UPDATE test SET value = 12 WHERE id = 1", "T2 row 1"),
        T2("SELECT value FROM test WHERE id = 2", "T2 goes on"),
        T2(COMMIT),
        T1(COMMIT),
        T3("SELECT * FROM test ORDER BY id", "after"),
    ),
    expect={"T2 row 1": Expect(waits_for="T1", ends="LockWaitTimeout")},
    differs={
        # innodb_rollback_on_timeout is OFF by default: only the statement is undone.
        "mariadb": {
            "T2 row 1": Expect(waits_for="T1", ends="LockWaitTimeout"),
            "T2 goes on": Expect(rows=((22,),)),
            "after": Expect(rows=((1, 11), (2, 22), (5, 50))),
        },
        # The whole transaction is failed: every statement up to ROLLBACK is refused,
        # and COMMIT rolls back.
        "postgresql": {
            "T2 row 1": Expect(waits_for="T1", ends="LockWaitTimeout"),
            "T2 goes on": Expect(ends="SQLError"),
            "after": Expect(rows=((1, 11), (2, 20), (5, 50))),
        },
    },
    lesson="A lock wait timeout on MariaDB undoes one statement and leaves the "
    "transaction open: COMMIT then commits the half that ran (T2's row 2). On "
    "PostgreSQL it fails the transaction, and COMMIT rolls it back. Code that catches "
    "the timeout and commits anyway gets a partial transaction on MariaDB.",
)

GAP_LOCK = Case(
    "gap-lock",
    "T1 reads ids 2..5 FOR UPDATE; T2 inserts id 3 into that range",
    (
        T1(BEGIN),
        T1("SELECT * FROM test WHERE id BETWEEN 2 AND 5 FOR UPDATE", "T1 locks range"),
        T2(BEGIN),
        T2("INSERT INTO test (id, value) VALUES (3, 30)", "T2 inserts"),
        T1(COMMIT),
        T2(COMMIT),
    ),
    expect={"T1 locks range": Expect(rows=((2, 20), (5, 50)))},
    differs={"mariadb": {"T2 inserts": Expect(waits_for="T1")}},
    lesson="At REPEATABLE READ, MariaDB's locking read locks the gaps between the index "
    "records it scanned (next-key locks), so no row can appear in the range until T1 "
    "ends: no phantoms for T1's locking reads. PostgreSQL locks only the rows it "
    "returned; the insert goes through.",
)

GAP_LOCK_RC = Case(
    "gap-lock-rc",
    "The same at READ COMMITTED: no gap locks on either engine",
    GAP_LOCK.steps,
    expect={"T1 locks range": Expect(rows=((2, 20), (5, 50)))},
    isolation="READ COMMITTED",
    lesson="MariaDB takes gap locks only at REPEATABLE READ and SERIALIZABLE (and for "
    "foreign-key and duplicate checks); at READ COMMITTED the insert does not wait.",
)

SHARE = Case(
    "share",
    "T1 and T2 both take a shared lock on a row; T2's update waits for T1",
    (
        T1(BEGIN),
        T1(
            {
                "mariadb": "SELECT * FROM test WHERE id = 1 LOCK IN SHARE MODE",
                "postgresql": "SELECT * FROM test WHERE id = 1 FOR SHARE",
            }
        ),
        T2(BEGIN),
        T2(
            {
                "mariadb": "SELECT * FROM test WHERE id = 1 LOCK IN SHARE MODE",
                "postgresql": "SELECT * FROM test WHERE id = 1 FOR SHARE",
            },
            "T2 shares",
        ),
        T2("UPDATE test SET value = 12 WHERE id = 1", "T2 updates"),
        T1(COMMIT),
        T2(COMMIT),
    ),
    expect={"T2 shares": Expect(rows=((1, 10),)), "T2 updates": Expect(waits_for="T1")},
    lesson="Shared locks let readers agree a row will not change under them; they "
    "coexist, and a writer waits for every other holder. (MariaDB 10.11 spells it LOCK "
    "IN SHARE MODE; FOR SHARE is MySQL 8's and PostgreSQL's.)",
)

SAME_KEY = Case(
    "same-key",
    "T1 and T2 insert the same key: T2 waits to learn whether T1 commits",
    (
        T1(BEGIN),
        T1("INSERT INTO test (id, value) VALUES (3, 30)"),
        T2(BEGIN),
        T2("INSERT INTO test (id, value) VALUES (3, 31)", "T2 inserts"),
        T1(COMMIT),
        T2("ROLLBACK"),
    ),
    expect={"T2 inserts": Expect(waits_for="T1", ends="DuplicateKey")},
    lesson="Inserts of different keys never wait (case inserts); of the same key the "
    "second waits on the first's uncommitted row, then fails with a duplicate key when "
    "it commits (it would succeed if T1 rolled back).",
)

CASES: dict[str, Case] = {
    case.name: case
    for case in (
        INSERTS,
        FOR_UPDATE,
        DEADLOCK,
        NOWAIT,
        SKIP_LOCKED,
        LOCK_WAIT_TIMEOUT,
        GAP_LOCK,
        GAP_LOCK_RC,
        SHARE,
        SAME_KEY,
    )
}


DEFAULT_LEVEL: dict[Engine, sql.Isolation] = {
    "mariadb": "REPEATABLE READ",
    "postgresql": "READ COMMITTED",
}


async def play(case: Case, url: str) -> Timeline:
    """Run `case` in the database `url` (its table is made afresh)."""
    engine = sql.dialect_for(url).engine
    level = case.isolation or DEFAULT_LEVEL[engine]
    return await scheduler.run(url, case.steps, isolation=level, setup=SETUP)
