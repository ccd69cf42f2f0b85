"""Every cell of the anomaly table, on the real servers, as measured on MariaDB 10.11 and
PostgreSQL 15: a server whose behaviour changes fails the test named for the cell."""

from __future__ import annotations

import asyncio

import pytest

from sdlab import sql
from sdlab.infra.pytest_plugin import Endpoints
from sdlab.locking import ANOMALIES, LEVELS, Cell, hermitage, table
from sdlab.locking.anomalies import Variant, Verdict, judge
from sdlab.locking.scheduler import Event, Step, Timeline

# (engine, level) -> anomaly -> (mark, how), from `sdlab locking anomalies`.
EXPECTED: dict[tuple[str, str], dict[str, tuple[str, str]]] = {
    ("mariadb", "READ UNCOMMITTED"): {
        "G0": ("✓", "blocked"),
        "G1a": ("—", "occurred"),
        "G1b": ("—", "occurred"),
        "G1c": ("—", "occurred"),
        "OTV": ("—", "occurred"),
        "PMP": ("—", "read predicate: occurred; write predicate: blocked"),
        "P4": ("—", "occurred"),
        "G-single": ("—", "occurred"),
        "G2-item": ("—", "occurred"),
        "G2": ("—", "occurred"),
    },
    ("mariadb", "READ COMMITTED"): {
        "G0": ("✓", "blocked"),
        "G1a": ("✓", "not visible"),
        "G1b": ("✓", "not visible"),
        "G1c": ("✓", "not visible"),
        "OTV": ("✓", "not visible"),
        "PMP": ("—", "read predicate: occurred; write predicate: blocked"),
        "P4": ("—", "occurred"),
        "G-single": ("—", "occurred"),
        "G2-item": ("—", "occurred"),
        "G2": ("—", "occurred"),
    },
    ("mariadb", "REPEATABLE READ"): {
        "G0": ("✓", "blocked"),
        "G1a": ("✓", "not visible"),
        "G1b": ("✓", "not visible"),
        "G1c": ("✓", "not visible"),
        "OTV": ("✓", "not visible"),
        "PMP": ("R/O", "read predicate: not visible; write predicate: occurred"),
        "P4": ("—", "occurred"),
        "G-single": (
            "R/O",
            "read skew: not visible; predicate read: not visible; write predicate: occurred",
        ),
        "G2-item": ("—", "occurred"),
        "G2": ("—", "occurred"),
    },
    ("mariadb", "SERIALIZABLE"): {
        "G0": ("✓", "blocked"),
        "G1a": ("✓", "blocked"),
        "G1b": ("✓", "blocked"),
        "G1c": ("✓", "aborted"),
        "OTV": ("✓", "blocked"),
        "PMP": ("✓", "read predicate: blocked; write predicate: aborted"),
        "P4": ("✓", "aborted"),
        "G-single": ("✓", "read skew: blocked; predicate read: blocked; write predicate: aborted"),
        "G2-item": ("✓", "aborted"),
        "G2": ("✓", "aborted"),
    },
    ("mariadb", "REPEATABLE READ + innodb_snapshot_isolation"): {
        "G0": ("✓", "blocked"),
        "G1a": ("✓", "not visible"),
        "G1b": ("✓", "not visible"),
        "G1c": ("✓", "not visible"),
        "OTV": ("✓", "not visible"),
        "PMP": ("✓", "read predicate: not visible; write predicate: aborted"),
        "P4": ("✓", "aborted"),
        "G-single": (
            "✓",
            "read skew: not visible; predicate read: not visible; write predicate: aborted",
        ),
        "G2-item": ("—", "occurred"),
        "G2": ("—", "occurred"),
    },
    ("postgresql", "READ UNCOMMITTED"): {
        "G0": ("✓", "blocked"),
        "G1a": ("✓", "not visible"),
        "G1b": ("✓", "not visible"),
        "G1c": ("✓", "not visible"),
        "OTV": ("✓", "not visible"),
        "PMP": ("—", "occurred"),
        "P4": ("—", "occurred"),
        "G-single": ("—", "occurred"),
        "G2-item": ("—", "occurred"),
        "G2": ("—", "occurred"),
    },
    ("postgresql", "READ COMMITTED"): {
        "G0": ("✓", "blocked"),
        "G1a": ("✓", "not visible"),
        "G1b": ("✓", "not visible"),
        "G1c": ("✓", "not visible"),
        "OTV": ("✓", "not visible"),
        "PMP": ("—", "occurred"),
        "P4": ("—", "occurred"),
        "G-single": ("—", "occurred"),
        "G2-item": ("—", "occurred"),
        "G2": ("—", "occurred"),
    },
    ("postgresql", "REPEATABLE READ"): {
        "G0": ("✓", "aborted"),
        "G1a": ("✓", "not visible"),
        "G1b": ("✓", "not visible"),
        "G1c": ("✓", "not visible"),
        "OTV": ("✓", "aborted"),
        "PMP": ("✓", "read predicate: not visible; write predicate: aborted"),
        "P4": ("✓", "aborted"),
        "G-single": (
            "✓",
            "read skew: not visible; predicate read: not visible; write predicate: aborted",
        ),
        "G2-item": ("—", "occurred"),
        "G2": ("—", "occurred"),
    },
    ("postgresql", "SERIALIZABLE"): {
        "G0": ("✓", "aborted"),
        "G1a": ("✓", "not visible"),
        "G1b": ("✓", "not visible"),
        "G1c": ("✓", "aborted"),
        "OTV": ("✓", "aborted"),
        "PMP": ("✓", "read predicate: not visible; write predicate: aborted"),
        "P4": ("✓", "aborted"),
        "G-single": (
            "✓",
            "read skew: not visible; predicate read: not visible; write predicate: aborted",
        ),
        "G2-item": ("✓", "aborted"),
        "G2": ("✓", "aborted"),
    },
}

SERVICE = {"mariadb": "mysql", "postgresql": "postgres"}
CELLS = [(engine, level, code) for (engine, level), row in EXPECTED.items() for code in row]


@pytest.fixture(scope="module")
def measured(sdlab_endpoints: Endpoints) -> dict[tuple[str, str, str], Cell]:
    """The whole table, once per test module: both engines at once, each in a scratch
    database."""

    async def engine(service: str) -> list[Cell]:
        async with sql.scratch_database(sdlab_endpoints[service].url, prefix="locking") as url:
            return await table(url)

    async def both() -> list[list[Cell]]:
        return await asyncio.gather(*(engine(s) for s in SERVICE.values()))

    return {(c.engine, c.level, c.anomaly): c for cells in asyncio.run(both()) for c in cells}


@pytest.mark.parametrize(("engine", "level", "anomaly"), CELLS, ids=["-".join(c) for c in CELLS])
def test_cell(
    measured: dict[tuple[str, str, str], Cell], engine: str, level: str, anomaly: str
) -> None:
    cell = measured[(engine, level, anomaly)]
    mark, how = EXPECTED[(engine, level)][anomaly]
    assert (cell.mark, cell.how) == (mark, how), f"{engine} {level} {anomaly}"
    assert cell.prevented == (mark == "✓")


# Who Hermitage's MySQL SERIALIZABLE transcripts say is rolled back by the deadlock.
VICTIMS = [
    ("PMP", "write predicate", "T1"),
    ("G-single", "write predicate", "T1"),
    ("P4", "lost update", "T2"),
    ("G2-item", "write skew", "T2"),
    ("G2", "predicate write skew", "T2"),
    ("G2", "two anti-dependency edges (Fekete et al.)", "T2"),
]


@pytest.mark.parametrize(("anomaly", "variant", "victim"), VICTIMS)
def test_mariadb_rolls_back_whom_hermitage_saw_mysql_roll_back(
    measured: dict[tuple[str, str, str], Cell], anomaly: str, variant: str, victim: str
) -> None:
    timeline = measured[("mariadb", "SERIALIZABLE", anomaly)].timelines[variant]
    assert [e.session for e in timeline.events if e.error == "Deadlock"] == [victim]


def test_the_table_covers_every_level_and_anomaly() -> None:
    assert set(EXPECTED) == {(e, level.name) for e, levels in LEVELS.items() for level in levels}
    assert all(list(row) == list(ANOMALIES) for row in EXPECTED.values())


def test_every_difference_from_hermitage_is_explained() -> None:
    for (engine, level), row in EXPECTED.items():
        for code, (mark, _) in row.items():
            cell = Cell(engine, level, code, {"v": Verdict(mark == "✓", "")})
            comparison = hermitage.compare(cell)
            if comparison.theirs is None:
                assert (engine, level) in hermitage.LEVEL_NOTES, f"{engine} {level}"
            elif mark != comparison.theirs:
                assert (engine, level, code) in hermitage.EXPLAINED, f"{engine} {level} {code}"


def test_hermitage_has_a_row_or_a_reference_for_every_level() -> None:
    for engine, levels in LEVELS.items():
        for level in levels:
            key = (engine, level.name)
            assert key in hermitage.PUBLISHED or key in hermitage.REFERENCE, key


# -- judging, without a server ---------------------------------------------------------


def _timeline(*events: Event) -> Timeline:
    return Timeline("postgresql", "READ COMMITTED", ["T1", "T2"], list(events))


def _event(name: str, **fields: object) -> Event:
    return Event(0, Step("T1", "SELECT 1", name), "SELECT 1", 0.0, 0.01, **fields)  # type: ignore[arg-type]


VARIANT = Variant("v", {"*": ()}, lambda t: t.event("read").rows == [(1, 101)], "a dirty read")


@pytest.mark.parametrize(
    ("fields", "verdict"),
    [
        ({"rows": [(1, 101)]}, Verdict(False, "occurred")),
        ({"rows": [(1, 10)], "waited_for": ("T2",)}, Verdict(True, "blocked")),
        ({"error": "LockWaitTimeout", "waited_for": ("T2",)}, Verdict(True, "blocked")),
        ({"error": "SerializationFailure"}, Verdict(True, "aborted")),
        ({"rows": [(1, 10)]}, Verdict(True, "not visible")),
    ],
)
def test_a_run_is_judged_from_its_timeline(fields: dict[str, object], verdict: Verdict) -> None:
    assert judge(VARIANT, _timeline(_event("read", **fields))) == verdict


@pytest.mark.parametrize(
    ("prevented", "mark"),
    [((True, True), "✓"), ((True, False), "R/O"), ((False, True), "—"), ((False, False), "—")],
)
def test_a_cell_marks_read_only_prevention_as_hermitage_does(
    prevented: tuple[bool, bool], mark: str
) -> None:
    verdicts = {
        "read": Verdict(prevented[0], "not visible"),
        "write": Verdict(prevented[1], "aborted"),
    }
    cell = Cell("mariadb", "REPEATABLE READ", "PMP", verdicts, read_only=frozenset({"read"}))
    assert cell.mark == mark
    assert Cell("mariadb", "RR", "X", verdicts).mark == (
        "✓" if all(prevented) else "some" if any(prevented) else "—"
    )
