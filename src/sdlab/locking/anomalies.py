"""Hermitage's isolation anomalies, run on real servers at every isolation level.

Hermitage (Martin Kleppmann, github.com/ept/hermitage) probes each anomaly of Adya's
and Bailis et al.'s definitions with a short script of two or three sessions typed by
hand. Here the same scripts are data (`Variant.steps`, after Hermitage's mysql.md and
postgres.md) played by `scheduler.run`, and each run is judged from its timeline:

- the anomaly *occurred* if the reads and writes show it (`Variant.shows`, a check on
  the timeline: a read saw an uncommitted value, both conflicting writes committed ...);
- otherwise it was prevented, and *how* says by what: `aborted` (the server rolled a
  transaction back: Deadlock or SerializationFailure), `blocked` (a statement waited on
  a lock until the conflict was over, or until its lock timeout), or `not visible` (no
  one waited or failed: the reads simply did not see the other's writes, MVCC).

Some anomalies have several variants (Hermitage's "for read predicates" and "for write
predicates"); a cell is prevented only if every variant is. A level that prevents the
read-only variants only is Hermitage's "R/O".

Every run starts from Hermitage's table: `test (id, value)` holding (1, 10), (2, 20).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from sdlab import sql
from sdlab.locking import scheduler
from sdlab.locking.scheduler import T1, T2, T3, Engine, Step, Timeline

SETUP = (
    "DROP TABLE IF EXISTS test",
    "CREATE TABLE test (id int PRIMARY KEY, value int)",
    "INSERT INTO test (id, value) VALUES (1, 10), (2, 20)",
)


@dataclass(frozen=True)
class Level:
    """An isolation level as a session asks for it (with settings, where they matter)."""

    name: str
    isolation: sql.Isolation
    settings: tuple[str, ...] = ()


MARIADB_SNAPSHOT = Level(
    "REPEATABLE READ + innodb_snapshot_isolation",
    "REPEATABLE READ",
    ("SET SESSION innodb_snapshot_isolation = ON",),
)
"""MariaDB 10.6.18 and later: a locking read of a row changed since the snapshot fails
(error 1020) instead of reading the newer version. ON by default from 11.6.2."""

LEVELS: dict[Engine, tuple[Level, ...]] = {
    "mariadb": (*(Level(name, name) for name in sql.ISOLATION_LEVELS), MARIADB_SNAPSHOT),
    "postgresql": tuple(Level(name, name) for name in sql.ISOLATION_LEVELS),
}

# -- how a run shows the anomaly ---------------------------------------------------

Check = Callable[[Timeline], bool]


def saw(step: str, rows: Mapping[int, int]) -> Check:
    """The step returned these rows (id -> value), perhaps among others."""

    def check(timeline: Timeline) -> bool:
        found = timeline.event(step).rows
        return found is not None and all(dict(found).get(k) == v for k, v in rows.items())

    return check


def saw_value(step: str, value: int) -> Check:
    """The step returned a row with this value."""

    def check(timeline: Timeline) -> bool:
        return any(row[1] == value for row in timeline.event(step).rows or ())

    return check


def ok(*steps: str) -> Check:
    """All these steps succeeded."""
    return lambda timeline: all(timeline.event(s).error is None for s in steps)


def through(step: str) -> Check:
    """The step succeeded without waiting."""
    return lambda timeline: ok(step)(timeline) and not timeline.event(step).blocked


def changed(step: str, rows: int) -> Check:
    """The step succeeded and changed this many rows."""
    return lambda timeline: ok(step)(timeline) and timeline.event(step).rowcount == rows


def by_engine(checks: Mapping[Engine, Check]) -> Check:
    """The engine's own check (for a variant whose scripts differ by engine)."""
    return lambda timeline: checks[timeline.engine](timeline)


def every(*checks: Check) -> Check:
    return lambda timeline: all(c(timeline) for c in checks)


def either(*checks: Check) -> Check:
    return lambda timeline: any(c(timeline) for c in checks)


# -- the scripts -------------------------------------------------------------------

Script = tuple[Step, ...]
ALL = "*"


@dataclass(frozen=True)
class Variant:
    name: str
    steps: Mapping[str | tuple[Engine, str], Script]
    """By (engine, isolation), else by engine, else under `ALL`: Hermitage's scripts
    differ where the engines' behaviour makes a different order the telling one."""
    occurred: Check
    shows: str
    """In words, what the timeline shows when the anomaly occurs."""
    read_only: bool = False
    """True if the transaction that could see the anomaly only reads."""
    setup_waits: tuple[str, ...] = ()
    """Steps that wait at every level by design (a dirty write the script sets up, a
    BLOCKS in every Hermitage transcript): their waits are not how the anomaly was
    prevented."""

    def script(self, engine: Engine, isolation: str) -> Script:
        for key in ((engine, isolation), engine, ALL):
            if key in self.steps:
                return self.steps[key]
        raise KeyError(f"{self.name}: no script for {engine}")


@dataclass(frozen=True)
class Anomaly:
    code: str
    title: str
    variants: tuple[Variant, ...]


ROWS = "SELECT * FROM test"


def begin(*sessions: Callable[..., Step]) -> Script:
    return tuple(session("BEGIN") for session in sessions)


G0 = Anomaly(
    "G0",
    "Write cycles (dirty writes)",
    (
        Variant(
            "dirty write",
            {
                ALL: (
                    *begin(T1, T2),
                    T1("UPDATE test SET value = 11 WHERE id = 1"),
                    T2("UPDATE test SET value = 12 WHERE id = 1", "T2 writes 1"),
                    T1("UPDATE test SET value = 21 WHERE id = 2"),
                    T1("COMMIT"),
                    T1(ROWS),
                    T2("UPDATE test SET value = 22 WHERE id = 2"),
                    T2("COMMIT"),
                    T3(ROWS, "after"),
                )
            },
            either(
                through("T2 writes 1"),
                saw("after", {1: 12, 2: 21}),
                saw("after", {1: 11, 2: 22}),
            ),
            "T2 overwrites T1's uncommitted row 1 without waiting, or the rows end up "
            "half from each",
        ),
    ),
)

G1A = Anomaly(
    "G1a",
    "Aborted reads",
    (
        Variant(
            "aborted read",
            {
                ALL: (
                    *begin(T1, T2),
                    T1("UPDATE test SET value = 101 WHERE id = 1"),
                    T2(ROWS, "T2 reads"),
                    T1("ROLLBACK"),
                    T2(ROWS, "T2 reads again"),
                    T2("COMMIT"),
                )
            },
            either(saw("T2 reads", {1: 101}), saw("T2 reads again", {1: 101})),
            "T2 reads 101, a value T1 then rolls back",
            read_only=True,
        ),
    ),
)

G1B = Anomaly(
    "G1b",
    "Intermediate reads",
    (
        Variant(
            "intermediate read",
            {
                ALL: (
                    *begin(T1, T2),
                    T1("UPDATE test SET value = 101 WHERE id = 1"),
                    T2(ROWS, "T2 reads"),
                    T1("UPDATE test SET value = 11 WHERE id = 1"),
                    T1("COMMIT"),
                    T2(ROWS, "T2 reads again"),
                    T2("COMMIT"),
                )
            },
            saw("T2 reads", {1: 101}),
            "T2 reads 101, which T1 overwrites before it commits",
            read_only=True,
        ),
    ),
)

G1C = Anomaly(
    "G1c",
    "Circular information flow",
    (
        Variant(
            "circular information flow",
            {
                ALL: (
                    *begin(T1, T2),
                    T1("UPDATE test SET value = 11 WHERE id = 1"),
                    T2("UPDATE test SET value = 22 WHERE id = 2"),
                    T1("SELECT * FROM test WHERE id = 2", "T1 reads 2"),
                    T2("SELECT * FROM test WHERE id = 1", "T2 reads 1"),
                    T1("COMMIT"),
                    T2("COMMIT"),
                )
            },
            either(saw("T1 reads 2", {2: 22}), saw("T2 reads 1", {1: 11})),
            "each reads the other's uncommitted write",
        ),
    ),
)

OTV = Anomaly(
    "OTV",
    "Observed transaction vanishes",
    (
        Variant(
            "observed transaction vanishes",
            {
                # Hermitage's MySQL script reads the whole table, its PostgreSQL one
                # row by row (as it must at READ COMMITTED to show anything).
                "mariadb": (
                    *begin(T1, T2, T3),
                    T1("UPDATE test SET value = 11 WHERE id = 1"),
                    T1("UPDATE test SET value = 19 WHERE id = 2"),
                    T2("UPDATE test SET value = 12 WHERE id = 1", "T2 waits"),
                    T1("COMMIT"),
                    T3(ROWS, "T3 reads"),
                    T2("UPDATE test SET value = 18 WHERE id = 2"),
                    T3(ROWS, "T3 reads again"),
                    T2("COMMIT"),
                    T3(ROWS, "T3 reads last"),
                    T3("COMMIT"),
                ),
                "postgresql": (
                    *begin(T1, T2, T3),
                    T1("UPDATE test SET value = 11 WHERE id = 1"),
                    T1("UPDATE test SET value = 19 WHERE id = 2"),
                    T2("UPDATE test SET value = 12 WHERE id = 1", "T2 waits"),
                    T1("COMMIT"),
                    T3("SELECT * FROM test WHERE id = 1", "T3 reads 1"),
                    T2("UPDATE test SET value = 18 WHERE id = 2"),
                    T3("SELECT * FROM test WHERE id = 2", "T3 reads 2"),
                    T2("COMMIT"),
                    T3("SELECT * FROM test WHERE id = 2"),
                    T3("SELECT * FROM test WHERE id = 1"),
                    T3("COMMIT"),
                ),
            },
            by_engine(
                {
                    "mariadb": either(
                        saw("T3 reads", {1: 12, 2: 19}), saw("T3 reads again", {1: 12, 2: 19})
                    ),
                    "postgresql": every(saw("T3 reads 1", {1: 12}), saw("T3 reads 2", {2: 19})),
                }
            ),
            "T3 sees T2's row 1 (12) beside T1's row 2 (19), which T2 overwrites",
            read_only=True,
            setup_waits=("T2 waits",),
        ),
    ),
)

_PMP_WRITE_MARIADB = (
    *begin(T1, T2),
    T1("UPDATE test SET value = value + 10", "T1 adds 10"),
    T2("SELECT * FROM test WHERE value = 20"),  # MariaDB takes T2's snapshot here
    T2("DELETE FROM test WHERE value = 20", "T2 deletes"),
    T1("COMMIT"),
    T2(ROWS, "T2 reads again"),
    T2("COMMIT"),
)

PMP = Anomaly(
    "PMP",
    "Predicate-many-preceders",
    (
        Variant(
            "read predicate",
            {
                ALL: (
                    *begin(T1, T2),
                    T1("SELECT * FROM test WHERE value = 30"),
                    T2("INSERT INTO test (id, value) VALUES (3, 30)"),
                    T2("COMMIT"),
                    T1("SELECT * FROM test WHERE value % 3 = 0", "T1 reads again"),
                    T1("COMMIT"),
                )
            },
            saw("T1 reads again", {3: 30}),
            "T1's second predicate read sees the row T2 inserted after its first",
            read_only=True,
        ),
        Variant(
            "write predicate",
            {
                "mariadb": _PMP_WRITE_MARIADB,
                # Serializable reads lock: Hermitage reads first, so T1's update waits.
                ("mariadb", "SERIALIZABLE"): (
                    *begin(T1, T2),
                    T2("SELECT * FROM test WHERE value = 20"),
                    T1("UPDATE test SET value = value + 10", "T1 adds 10"),
                    T2("DELETE FROM test WHERE value = 20", "T2 deletes"),
                    T1("ROLLBACK"),
                    T2(ROWS, "T2 reads again"),
                    T2("COMMIT"),
                ),
                "postgresql": (
                    *begin(T1, T2),
                    T1("UPDATE test SET value = value + 10", "T1 adds 10"),
                    T2("DELETE FROM test WHERE value = 20", "T2 deletes"),
                    T1("COMMIT"),
                    T2("SELECT * FROM test WHERE value = 20", "T2 reads again"),
                    T2("COMMIT"),
                ),
            },
            every(ok("T1 adds 10", "T2 deletes"), saw_value("T2 reads again", 20)),
            "after T2's `DELETE ... WHERE value = 20`, T2 still sees a row with value 20",
        ),
    ),
)

P4 = Anomaly(
    "P4",
    "Lost update",
    (
        Variant(
            "lost update",
            {
                ALL: (
                    *begin(T1, T2),
                    T1("SELECT * FROM test WHERE id = 1"),
                    T2("SELECT * FROM test WHERE id = 1"),
                    T1("UPDATE test SET value = 11 WHERE id = 1", "T1 writes"),
                    T2("UPDATE test SET value = 11 WHERE id = 1", "T2 writes"),
                    T1("COMMIT", "T1 commits"),
                    T2("COMMIT", "T2 commits"),
                )
            },
            ok("T1 writes", "T2 writes", "T1 commits", "T2 commits"),
            "both read 10 and both write and commit: one update is lost",
        ),
    ),
)

_READ_SKEW_WRITES = (
    T2(ROWS),
    T2("UPDATE test SET value = 12 WHERE id = 1", "T2 writes 1"),
    T2("UPDATE test SET value = 18 WHERE id = 2", "T2 writes 2"),
    T2("COMMIT"),
)

G_SINGLE = Anomaly(
    "G-single",
    "Single anti-dependency cycles (read skew)",
    (
        Variant(
            "read skew",
            {
                ALL: (
                    *begin(T1, T2),
                    T1("SELECT * FROM test WHERE id = 1", "T1 reads 1"),
                    T2("SELECT * FROM test WHERE id = 1"),
                    T2("SELECT * FROM test WHERE id = 2"),
                    T2("UPDATE test SET value = 12 WHERE id = 1", "T2 writes 1"),
                    T2("UPDATE test SET value = 18 WHERE id = 2", "T2 writes 2"),
                    T2("COMMIT"),
                    T1("SELECT * FROM test WHERE id = 2", "T1 reads 2"),
                    T1("COMMIT"),
                )
            },
            every(
                ok("T2 writes 1", "T2 writes 2"),
                saw("T1 reads 1", {1: 10}),
                saw("T1 reads 2", {2: 18}),
            ),
            "T1 reads row 1 from before T2 and row 2 from after it",
            read_only=True,
        ),
        Variant(
            "predicate read",
            {
                ALL: (
                    *begin(T1, T2),
                    T1("SELECT * FROM test WHERE value % 5 = 0"),
                    T2("UPDATE test SET value = 12 WHERE value = 10", "T2 writes"),
                    T2("COMMIT"),
                    T1("SELECT * FROM test WHERE value % 3 = 0", "T1 reads again"),
                    T1("COMMIT"),
                )
            },
            every(changed("T2 writes", 1), saw("T1 reads again", {1: 12})),
            "T1's second predicate read sees T2's update its first did not",
            read_only=True,
        ),
        Variant(
            "write predicate",
            {
                ALL: (
                    *begin(T1, T2),
                    T1("SELECT * FROM test WHERE id = 1", "T1 reads 1"),
                    *_READ_SKEW_WRITES,
                    T1("DELETE FROM test WHERE value = 20", "T1 deletes"),
                    T1("SELECT * FROM test WHERE id = 2"),
                    T1("COMMIT"),
                ),
                ("mariadb", "SERIALIZABLE"): (
                    *begin(T1, T2),
                    T1("SELECT * FROM test WHERE id = 1", "T1 reads 1"),
                    T2(ROWS),
                    T2("UPDATE test SET value = 12 WHERE id = 1", "T2 writes 1"),
                    T1("DELETE FROM test WHERE value = 20", "T1 deletes"),
                    T2("UPDATE test SET value = 18 WHERE id = 2", "T2 writes 2"),
                    T1("ROLLBACK"),
                    T2("COMMIT"),
                ),
            },
            every(
                ok("T2 writes 1", "T2 writes 2"),
                saw("T1 reads 1", {1: 10}),
                changed("T1 deletes", 0),
            ),
            "T1 read row 1 from before T2, but its DELETE ... WHERE value = 20 sees row 2 "
            "from after T2 (18) and deletes nothing",
        ),
    ),
)

G2_ITEM = Anomaly(
    "G2-item",
    "Item anti-dependency cycles (write skew on disjoint read)",
    (
        Variant(
            "write skew",
            {
                ALL: (
                    *begin(T1, T2),
                    T1("SELECT * FROM test WHERE id IN (1, 2)"),
                    T2("SELECT * FROM test WHERE id IN (1, 2)"),
                    T1("UPDATE test SET value = 11 WHERE id = 1", "T1 writes"),
                    T2("UPDATE test SET value = 21 WHERE id = 2", "T2 writes"),
                    T1("COMMIT", "T1 commits"),
                    T2("COMMIT", "T2 commits"),
                )
            },
            ok("T1 writes", "T2 writes", "T1 commits", "T2 commits"),
            "both read both rows, each updates a different one, both commit",
        ),
    ),
)

G2 = Anomaly(
    "G2",
    "Anti-dependency cycles (write skew on predicate read)",
    (
        Variant(
            "predicate write skew",
            {
                ALL: (
                    *begin(T1, T2),
                    T1("SELECT * FROM test WHERE value % 3 = 0"),
                    T2("SELECT * FROM test WHERE value % 3 = 0"),
                    T1("INSERT INTO test (id, value) VALUES (3, 30)", "T1 inserts"),
                    T2("INSERT INTO test (id, value) VALUES (4, 42)", "T2 inserts"),
                    T1("COMMIT", "T1 commits"),
                    T2("COMMIT", "T2 commits"),
                    T3("SELECT * FROM test WHERE value % 3 = 0", "after"),
                )
            },
            every(ok("T1 inserts", "T2 inserts"), saw("after", {3: 30, 4: 42})),
            "both find no row matching, each inserts one, both commit",
        ),
        Variant(
            "two anti-dependency edges (Fekete et al.)",
            {
                ALL: (
                    T1("BEGIN"),
                    T1(ROWS, "T1 reads"),
                    T2("BEGIN"),
                    T2("UPDATE test SET value = value + 5 WHERE id = 2", "T2 writes"),
                    T2("COMMIT", "T2 commits"),
                    T3("BEGIN"),
                    T3(ROWS, "T3 reads"),
                    T3("COMMIT"),
                    T1("UPDATE test SET value = 0 WHERE id = 1", "T1 writes"),
                    T1("COMMIT", "T1 commits"),
                ),
                # Hermitage's MySQL order: T2 and T3 start while T1's read locks hold.
                ("mariadb", "SERIALIZABLE"): (
                    T1("BEGIN"),
                    T1(ROWS, "T1 reads"),
                    T2("BEGIN"),
                    T2("UPDATE test SET value = value + 5 WHERE id = 2", "T2 writes"),
                    T3("BEGIN"),
                    T3(ROWS, "T3 reads"),
                    T1("UPDATE test SET value = 0 WHERE id = 1", "T1 writes"),
                    T3("COMMIT"),
                    T1("COMMIT", "T1 commits"),
                    T2("COMMIT", "T2 commits"),
                ),
            },
            every(
                ok("T2 writes", "T2 commits", "T1 writes", "T1 commits"),
                saw("T3 reads", {1: 10, 2: 25}),
            ),
            "T3 sees T2's update but not T1's, T1 read from before T2: a cycle, and all "
            "three commit",
        ),
    ),
)

ANOMALIES: dict[str, Anomaly] = {
    a.code: a for a in (G0, G1A, G1B, G1C, OTV, PMP, P4, G_SINGLE, G2_ITEM, G2)
}

# -- judging runs ------------------------------------------------------------------

ABORTS = {"Deadlock", "SerializationFailure"}


@dataclass(frozen=True)
class Verdict:
    prevented: bool
    how: str
    """`occurred`, or what prevented it: `aborted`, `blocked` or `not visible`."""


def judge(variant: Variant, timeline: Timeline) -> Verdict:
    """Whether the anomaly occurred in this run, and if not, what stopped it."""
    if variant.occurred(timeline):
        return Verdict(False, "occurred")
    if any(e.error in ABORTS for e in timeline.events):
        return Verdict(True, "aborted")
    waits = [e for e in timeline.events if e.step.name not in variant.setup_waits]
    if any(e.blocked or e.error == "LockWaitTimeout" for e in waits):
        return Verdict(True, "blocked")
    return Verdict(True, "not visible")


@dataclass
class Cell:
    """One anomaly at one level of one engine: every variant's run and verdict."""

    engine: Engine
    level: str
    anomaly: str
    verdicts: dict[str, Verdict]
    timelines: dict[str, Timeline] = field(default_factory=dict, repr=False)
    read_only: frozenset[str] = frozenset()

    @property
    def prevented(self) -> bool:
        return all(v.prevented for v in self.verdicts.values())

    @property
    def mark(self) -> str:
        """Hermitage's notation: ✓ prevented; — not (not even where the transaction
        only reads); R/O prevented in read-only transactions only; some: prevented in
        some variants, none of them read-only."""
        held = {name for name, v in self.verdicts.items() if v.prevented}
        if len(held) == len(self.verdicts):
            return "✓"
        if self.read_only:
            return "R/O" if self.read_only <= held else "—"
        return "some" if held else "—"

    @property
    def how(self) -> str:
        hows = [v.how for v in self.verdicts.values()]
        if len(set(hows)) == 1:
            return hows[0]
        return "; ".join(f"{name}: {v.how}" for name, v in self.verdicts.items())

    @property
    def short(self) -> str:
        """The mark and the ways it was prevented, for a table: `✓ blocked`."""
        if self.mark == "—":
            return self.mark
        hows = [v.how for v in self.verdicts.values() if v.prevented]
        return f"{self.mark} {', '.join(dict.fromkeys(hows))}"

    def as_dict(self) -> dict[str, object]:
        return {
            "engine": self.engine,
            "level": self.level,
            "anomaly": self.anomaly,
            "prevented": self.prevented,
            "how": self.how,
            "mark": self.mark,
        }


async def probe(url: str, level: Level, anomaly: Anomaly) -> Cell:
    """Run every variant of `anomaly` at `level` in the database `url`."""
    engine = sql.dialect_for(url).engine
    cell = Cell(
        engine,
        level.name,
        anomaly.code,
        {},
        read_only=frozenset(v.name for v in anomaly.variants if v.read_only),
    )
    for variant in anomaly.variants:
        timeline = await scheduler.run(
            url,
            variant.script(engine, level.isolation),
            isolation=level.isolation,
            level=level.name,
            settings=level.settings,
            setup=SETUP,
        )
        cell.timelines[variant.name] = timeline
        cell.verdicts[variant.name] = judge(variant, timeline)
    return cell


async def table(
    url: str,
    *,
    levels: Sequence[Level] | None = None,
    anomalies: Sequence[Anomaly] | None = None,
    done: Callable[[Cell], object] | None = None,
) -> list[Cell]:
    """Every anomaly at every level of the engine of `url` (a database of its own:
    each run drops and makes the table `test`). `done(cell)` after each cell."""
    engine = sql.dialect_for(url).engine
    cells = []
    for level in levels or LEVELS[engine]:
        for anomaly in anomalies or ANOMALIES.values():
            cell = await probe(url, level, anomaly)
            cells.append(cell)
            if done is not None:
                done(cell)
    return cells
