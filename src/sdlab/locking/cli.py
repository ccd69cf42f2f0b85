"""`sdlab locking`: watch row locks between sessions, and the isolation-anomaly table."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Annotated, TypeVar

import typer
from rich.table import Table
from rich.text import Text

from sdlab import frontend, lab, sql
from sdlab.console import console, spinner
from sdlab.locking import hermitage
from sdlab.locking.anomalies import ANOMALIES, LEVELS, Cell, table
from sdlab.locking.cases import CASES, check, play
from sdlab.locking.experiment import AnomalyTable, CaseTimelines
from sdlab.locking.scheduler import Timeline

app = typer.Typer(
    help="SQL locking (sdlab.locking): sessions' statements played in a chosen "
    "interleaving on real MariaDB and PostgreSQL connections, with who waited for whom, "
    "and Hermitage's isolation anomalies run at every isolation level.\n\n"
    "The library is `from sdlab.locking import run, Step, CASES, ANOMALIES`; see "
    "docs/locking.md.",
    no_args_is_help=True,
)

CaseName = StrEnum("CaseName", {name: name for name in CASES})  # type: ignore[misc]
AnomalyCode = StrEnum("AnomalyCode", {code: code for code in ANOMALIES})  # type: ignore[misc]


TITLE = {"mariadb": "MariaDB", "postgresql": "PostgreSQL"}
COLOURS = ["cyan", "magenta", "yellow", "green"]

Engines = Annotated[
    list[str] | None,
    frontend.db_option(
        "The database to run on (repeatable): mysql, postgres (the servers sdlab finds), "
        "or a URL of either. Default: both engines."
    ),
]
RENAMED = frontend.respelled({"--engine": "--db", "-e": "--db"})

T = TypeVar("T")


def _servers(dbs: list[str] | None) -> dict[str, str]:
    """Engine (mariadb, postgresql) -> server URL, one server per engine."""
    servers: dict[str, str] = {}
    for value in dbs or ["mysql", "postgres"]:
        try:
            url = frontend.database_url(value, "")
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--db") from None
        engine = sql.engine_of(url)
        if engine in servers:
            raise typer.BadParameter(
                f"two {TITLE[engine]} servers: one per engine", param_hint="--db"
            )
        servers[engine] = url
    return servers


async def _in_scratch(server: str, work: Callable[[str], Awaitable[T]]) -> T:
    async with sql.scratch_database(server, prefix="locking") as url:
        return await work(url)


@app.command(cls=RENAMED)
def demo(
    case: Annotated[CaseName, typer.Argument(help="The case to play.")],
    engine: Engines = None,
) -> None:
    """Play one case on real sessions and print its timeline, one column per session.

    Cases: inserts, for-update, deadlock (the seed's three), nowait, skip-locked,
    lock-timeout, gap-lock, gap-lock-rc, share, same-key. Each runs in a scratch
    database at the engine's default isolation level (MariaDB REPEATABLE READ,
    PostgreSQL READ COMMITTED) unless the case names one.

    Examples:

      sdlab locking demo deadlock

      sdlab locking demo gap-lock --db mysql
    """
    chosen = CASES[case.value]
    for name, server in _servers(engine).items():
        timeline = asyncio.run(_in_scratch(server, lambda url: play(chosen, url)))
        console.print(timeline_table(timeline, f"{chosen.name} on {TITLE[name]}: {chosen.title}"))
        problems = check(chosen, timeline)
        if problems:
            console.print("[red]not as the case expects:[/]")
            for problem in problems:
                console.print(f"  - {problem}")
        console.print()
    console.print(chosen.lesson, soft_wrap=True)


def timeline_table(timeline: Timeline, title: str) -> Table:
    """A timeline as two (or three) terminals side by side, one colour per session."""
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("at (ms)", justify="right")
    colour = {s: COLOURS[i % len(COLOURS)] for i, s in enumerate(timeline.sessions)}
    for session in timeline.sessions:
        table.add_column(Text(session, style=f"bold {colour[session]}"), overflow="fold")
    for event in timeline.events:
        cell = Text(event.sql, style=colour[event.session])
        outcome = event.summary()
        style = "red" if event.error else ("bold" if event.blocked else "dim")
        cell.append(f"\n→ {outcome}", style=style)
        cells = [cell if s == event.session else Text("") for s in timeline.sessions]
        table.add_row(str(event.index + 1), f"{event.started * 1000:.0f}", *cells)
    return table


@app.command(cls=RENAMED)
def anomalies(
    engine: Engines = None,
    anomaly: Annotated[
        list[AnomalyCode] | None,
        typer.Option("--anomaly", "-a", help="Anomaly to run (repeatable). Default: all."),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON object per line and cell: engine, level, anomaly, prevented, "
            "how, mark, hermitage.",
        ),
    ] = False,
    timelines: Annotated[
        bool, typer.Option("--timelines", help="Print every run's timeline too.")
    ] = False,
) -> None:
    """Run Hermitage's anomalies at every isolation level and print which each prevents.

    A cell: ✓ prevented, — not, R/O prevented only in read-only transactions; and how
    (blocked: a statement waited on a lock; aborted: the server rolled a transaction
    back; not visible: the reads simply did not see the other's writes). Hermitage's
    published table is printed beside it.

    Examples:

      sdlab locking anomalies

      sdlab locking anomalies --db postgres -a G2-item --timelines

      sdlab locking anomalies --json
    """
    chosen = [ANOMALIES[a.value] for a in anomaly] if anomaly else None
    servers = _servers(engine)

    async def everything() -> list[list[Cell]]:
        jobs = (_in_scratch(s, lambda url: table(url, anomalies=chosen)) for s in servers.values())
        return await asyncio.gather(*jobs)

    if as_json:
        found = asyncio.run(everything())
    else:
        with spinner("running the anomalies on both engines..."):
            found = asyncio.run(everything())
    for name, cells in zip(servers, found, strict=True):
        if as_json:
            for cell in cells:
                theirs = hermitage.compare(cell).theirs
                print(json.dumps({**cell.as_dict(), "hermitage": theirs}, ensure_ascii=False))
            continue
        console.print(anomaly_table(name, cells))
        for note in hermitage.notes(cells):
            console.print(f"  - {note}", soft_wrap=True)
        if timelines:
            for cell in cells:
                for variant, timeline in cell.timelines.items():
                    verdict = cell.verdicts[variant]
                    shows = next(v for v in ANOMALIES[cell.anomaly].variants if v.name == variant)
                    title = (
                        f"{cell.anomaly} ({variant}) at {cell.level}: {verdict.how}. "
                        f"The anomaly would show as: {shows.shows}."
                    )
                    console.print(timeline_table(timeline, title))
        console.print()


def anomaly_table(engine: str, cells: list[Cell]) -> Table:
    codes = list(dict.fromkeys(c.anomaly for c in cells))
    table = Table(
        title=f"{TITLE[engine]}: ours, then Hermitage's ({hermitage.TESTED[engine]})",
        title_justify="left",
    )
    table.add_column("level", no_wrap=True)
    for code in codes:
        table.add_column(code, justify="center")
    for level in [lv.name for lv in LEVELS[engine]]:
        row = {c.anomaly: c for c in cells if c.level == level}
        if not row:
            continue
        ours = [
            Text(row[code].short, style="green" if row[code].prevented else "red") for code in codes
        ]
        table.add_row(level, *ours)
        theirs = [hermitage.compare(row[code]).theirs or "" for code in codes]
        marks = [
            Text(t, style="dim" if t == row[c].mark else "bold red")
            for t, c in zip(theirs, codes, strict=True)
        ]
        table.add_row(Text("  Hermitage", style="dim"), *marks)
    return table


@app.command()
def experiment(quick: lab.Quick = False, out: lab.ReportDir = None) -> None:
    """The lab's experiments: every case's timeline on both engines, and the anomaly
    table beside Hermitage's, with each difference explained.

    Examples:

      sdlab locking experiment --quick

      sdlab locking experiment --out /tmp/locking-report
    """
    chosen = [CaseTimelines(), AnomalyTable.quick() if quick else AnomalyTable()]
    lab.run_as_command(chosen, quick=quick, out=out)
