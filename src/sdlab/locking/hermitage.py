"""Hermitage's published results for MySQL/InnoDB and PostgreSQL, to set ours beside.

From the summary table of github.com/ept/hermitage (README at commit 000346f), by
Martin Kleppmann, CC BY 4.0: tested by hand on MySQL 5.6.21 with InnoDB and on
PostgreSQL 9.3.5. Marks: ✓ prevented, — not prevented, R/O prevented in read-only
transactions only. Hermitage did not test MariaDB: its MySQL row is the nearest
published reference for MariaDB's InnoDB, and every difference is explained in
`EXPLAINED` (a test holds that none goes unexplained).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sdlab.locking.anomalies import MARIADB_SNAPSHOT, Cell

SOURCE = "https://github.com/ept/hermitage (README, commit 000346f)"
TESTED = {"mariadb": "MySQL 5.6.21 / InnoDB", "postgresql": "PostgreSQL 9.3.5"}
CODES = ("G0", "G1a", "G1b", "G1c", "OTV", "PMP", "P4", "G-single", "G2-item", "G2")


def _row(marks: str) -> dict[str, str]:
    return dict(zip(CODES, marks.split(), strict=True))


PUBLISHED: dict[tuple[str, str], dict[str, str]] = {
    ("mariadb", "READ UNCOMMITTED"): _row("✓ — — — — — — — — —"),
    ("mariadb", "READ COMMITTED"): _row("✓ ✓ ✓ ✓ ✓ — — — — —"),
    ("mariadb", "REPEATABLE READ"): _row("✓ ✓ ✓ ✓ ✓ R/O — R/O — —"),
    ("mariadb", "SERIALIZABLE"): _row("✓ ✓ ✓ ✓ ✓ ✓ ✓ ✓ ✓ ✓"),
    ("postgresql", "READ COMMITTED"): _row("✓ ✓ ✓ ✓ ✓ — — — — —"),
    ("postgresql", "REPEATABLE READ"): _row("✓ ✓ ✓ ✓ ✓ ✓ ✓ ✓ — —"),
    ("postgresql", "SERIALIZABLE"): _row("✓ ✓ ✓ ✓ ✓ ✓ ✓ ✓ ✓ ✓"),
}

REFERENCE: dict[tuple[str, str], tuple[str, str]] = {
    # Levels Hermitage has no row for, and the row to hold them against.
    ("postgresql", "READ UNCOMMITTED"): ("postgresql", "READ COMMITTED"),
    ("mariadb", MARIADB_SNAPSHOT.name): ("postgresql", "REPEATABLE READ"),
}

LEVEL_NOTES: dict[tuple[str, str], str] = {
    ("postgresql", "READ UNCOMMITTED"): (
        "Hermitage has no PostgreSQL READ UNCOMMITTED row: PostgreSQL accepts the level "
        "and runs it as READ COMMITTED (it never shows uncommitted data), so it is set "
        "beside Hermitage's READ COMMITTED row."
    ),
    ("mariadb", MARIADB_SNAPSHOT.name): (
        "Not in Hermitage: MariaDB only (10.6.18 and later; ON by default from 11.6.2). "
        "With innodb_snapshot_isolation=ON a locking read or write of a row changed "
        "since the transaction's snapshot fails with error 1020 (SerializationFailure) "
        "instead of acting on the newer version, which turns REPEATABLE READ into "
        "snapshot isolation: PMP, P4 and G-single are prevented by aborting, as at "
        "PostgreSQL's REPEATABLE READ, the row it is set beside."
    ),
}

EXPLAINED: dict[tuple[str, str, str], str] = {}
"""(engine, level, anomaly) -> why our mark differs from Hermitage's. Empty while none
does: MariaDB 10.11 with innodb_snapshot_isolation OFF marks every cell as MySQL 5.6
did, and PostgreSQL 15 as PostgreSQL 9.3 did."""


@dataclass(frozen=True)
class Comparison:
    ours: str
    theirs: str | None
    """Hermitage's mark for the same (or the reference) level; None if it has none."""
    why: str = ""

    @property
    def same(self) -> bool:
        return self.ours == self.theirs


def compare(cell: Cell) -> Comparison:
    """Our cell beside Hermitage's, with the explanation where they differ."""
    key = (cell.engine, cell.level)
    row = PUBLISHED.get(REFERENCE.get(key, key))
    theirs = row[cell.anomaly] if row else None
    why = EXPLAINED.get((cell.engine, cell.level, cell.anomaly), "")
    if theirs is not None and theirs != cell.mark and not why:
        why = "unexplained: a change in the server since this table was measured?"
    return Comparison(cell.mark, theirs, why)


_TITLE = {"mariadb": "MariaDB", "postgresql": "PostgreSQL"}


def notes(cells: Iterable[Cell]) -> list[str]:
    """The comparison in words: how many cells match, each level Hermitage lacks, and
    each cell that differs with why."""
    found: list[str] = []
    same = {True: 0, False: 0}  # by: Hermitage has a row for this very level
    compared = {True: 0, False: 0}
    levels: dict[tuple[str, str], None] = {}
    for cell in cells:
        levels[(cell.engine, cell.level)] = None
        comparison = compare(cell)
        if comparison.theirs is None:
            continue
        direct = (cell.engine, cell.level) in PUBLISHED
        compared[direct] += 1
        same[direct] += comparison.same
        if not comparison.same:
            found.append(
                f"{_TITLE[cell.engine]} {cell.level}, {cell.anomaly}: ours {comparison.ours}, "
                f"Hermitage's {comparison.theirs}. {comparison.why}"
            )
    summary = f"{same[True]} of {compared[True]} cells match Hermitage's marks for the same level"
    if any(engine == "mariadb" for engine, _ in levels):
        summary += " (MariaDB's against its MySQL/InnoDB rows)"
    if compared[False]:
        summary += (
            f"; {same[False]} of {compared[False]} cells of levels it has no row for "
            "match the row set beside them"
        )
    return [summary + ".", *(LEVEL_NOTES[k] for k in levels if k in LEVEL_NOTES), *found]
