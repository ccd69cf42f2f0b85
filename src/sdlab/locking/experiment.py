"""The locking experiments: the cases' timelines, and the anomaly table beside Hermitage's.

`locking-cases` plays every case on MariaDB and PostgreSQL and records each statement:
when it started, whom it waited for and how long, how it ended, and whether that is what
the case expects. `locking` runs Hermitage's ten anomalies at every isolation level of
both engines (and MariaDB's innodb_snapshot_isolation), `repeats` times, and sets the
table beside Hermitage's published one, each difference explained. Both run in scratch
databases, dropped afterwards.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

from sdlab import sql
from sdlab.bench import (
    Bench,
    Chart,
    Experiment,
    Headline,
    Outcome,
    Published,
    Row,
    published,
    register,
)
from sdlab.locking import hermitage
from sdlab.locking.anomalies import ANOMALIES, LEVELS, Cell, table
from sdlab.locking.cases import CASES, check, play

SERVICE = {"mariadb": "mysql", "postgresql": "postgres"}
TITLE = {"mariadb": "MariaDB", "postgresql": "PostgreSQL"}
PREVENTED = "prevented"  # how many of the anomalies a level prevents in every variant


@register
@dataclass
class CaseTimelines(Experiment):
    """Each locking case (the seed's three: inserts, FOR UPDATE, a deadlock; then
    NOWAIT, SKIP LOCKED, a lock-wait timeout, gap locks, shared locks, an insert of the
    same key) played on real MariaDB and PostgreSQL sessions: every statement with when
    it ran, whom the server showed it waiting for, and how it ended."""

    name = "locking-cases"
    system = "locking"
    title = "SQL locking cases: timelines on MariaDB and PostgreSQL"
    services = ("mysql", "postgres")

    async def run(self, bench: Bench) -> Outcome:
        rows: list[Row] = []
        problems: list[str] = []
        for engine, service in SERVICE.items():
            async with sql.scratch_database(bench.endpoint(service).url, prefix="locking") as url:
                with bench.progress(f"cases on {TITLE[engine]}", total=len(CASES)) as advance:
                    for case in CASES.values():
                        timeline = await play(case, url)
                        wrong = check(case, timeline)
                        problems += [f"{case.name} on {TITLE[engine]}: {p}" for p in wrong]
                        for event in timeline.events:
                            rows.append(
                                {
                                    "case": case.name,
                                    "engine": TITLE[engine],
                                    "#": event.index + 1,
                                    "session": event.session,
                                    "statement": event.sql,
                                    "at (ms)": round(event.started * 1000),
                                    "outcome": event.summary(),
                                }
                            )
                        advance()
        verdict = (
            f"Every step of the {len(CASES)} cases did on both engines what the case "
            "expects (who waited for whom, who failed with which error)."
            if not problems
            else "Not as expected: " + "; ".join(problems)
        )
        # A case's last statement starts once every wait before it has ended: the bar
        # per case and engine is how long its locks held it up.
        chart = Chart(
            "case", ["at (ms)"], group="engine", ylabel="ms until the last statement started"
        )
        return Outcome(
            rows,
            chart=chart,
            published=published("sql-locking"),
            notes=[verdict, *(f"{case.name}: {case.lesson}" for case in CASES.values())],
        )


@register
@dataclass
class AnomalyTable(Experiment):
    """Hermitage's isolation anomalies (G0 dirty writes to G2 anti-dependency cycles),
    run, not copied, at every isolation level of MariaDB and PostgreSQL: which anomaly
    each level prevents, and how (blocked, aborted, not visible), beside Hermitage's
    published table for MySQL/InnoDB and PostgreSQL, with every difference explained."""

    name = "locking"
    system = "locking"
    title = "Isolation anomalies per level, MariaDB and PostgreSQL, beside Hermitage"
    services = ("mysql", "postgres")

    repeats: int = 3

    @classmethod
    def quick(cls) -> Self:
        return cls(repeats=1)

    async def run(self, bench: Bench) -> Outcome:
        total = self.repeats * len(ANOMALIES) * sum(len(levels) for levels in LEVELS.values())
        runs: list[list[Cell]] = []
        with bench.progress("anomaly cells", total=total) as advance:
            for _ in range(self.repeats):
                runs.append(await self._once(bench, lambda _cell: advance()))
        seen: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        for cells in runs:
            for cell in cells:
                seen[(cell.engine, cell.level, cell.anomaly)].add(cell.short)
        unstable = [f"{e} {lv} {a}: {sorted(s)}" for (e, lv, a), s in seen.items() if len(s) > 1]
        cells = runs[-1]
        rows = []
        for engine, levels in LEVELS.items():
            for level in levels:
                row: Row = {"engine": TITLE[engine], "level": level.name}
                mine = [c for c in cells if (c.engine, c.level) == (engine, level.name)]
                for cell in mine:
                    row[cell.anomaly] = cell.short
                row[PREVENTED] = sum(cell.mark == "✓" for cell in mine)
                rows.append(row)
        notes = hermitage.notes(cells)
        if unstable:
            notes.append("Cells that changed between runs: " + "; ".join(unstable))
        elif self.repeats > 1:
            notes.append(f"Every cell gave the same result in all {self.repeats} runs.")
        chart = Chart(
            "level", [PREVENTED], group="engine", ylabel=f"anomalies prevented, of {len(ANOMALIES)}"
        )
        return Outcome(rows, chart=chart, published=_hermitage_table(), notes=notes)

    def headline(self, rows: list[Row]) -> Headline | None:
        """Cells whose mark is not Hermitage's and that no note explains: 0 means the
        published table is reproduced, every known difference accounted for."""
        engine_of = {title: engine for engine, title in TITLE.items()}
        unexplained = 0
        for row in rows:
            key = (engine_of[str(row["engine"])], str(row["level"]))
            theirs = hermitage.PUBLISHED.get(hermitage.REFERENCE.get(key, key), {})
            for code in hermitage.CODES if theirs else ():
                ours = str(row.get(code, "")).split(" ")[0]
                explained = (*key, code) in hermitage.EXPLAINED
                unexplained += bool(ours) and ours != theirs[code] and not explained
        return Headline("cells unlike Hermitage's, unexplained", unexplained, target=0)

    async def _once(self, bench: Bench, done: Callable[[Cell], object]) -> list[Cell]:
        async def engine(service: str) -> list[Cell]:
            server = bench.endpoint(service).url
            async with sql.scratch_database(server, prefix="locking") as url:
                return await table(url, done=done)

        found = await asyncio.gather(*(engine(service) for service in SERVICE.values()))
        return [cell for cells in found for cell in cells]


def _hermitage_table() -> Published:
    return Published(
        "hermitage",
        f"Hermitage, {hermitage.SOURCE}",
        ["tested", "level", *hermitage.CODES],
        [
            [hermitage.TESTED[engine], level, *(marks[c] for c in hermitage.CODES)]
            for (engine, level), marks in hermitage.PUBLISHED.items()
        ],
        "✓ prevented, — not prevented, R/O prevented in read-only transactions only.",
    )
