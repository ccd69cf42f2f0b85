"""`sdlab lab`: run the registered experiments on real services and write a report.

    sdlab lab run                 # every experiment, full size -> reports/latest/
    sdlab lab run --quick         # every experiment, each in under a minute
    sdlab lab run --only pool     # one system's experiments (or one experiment by name)
    sdlab lab report              # render report.md and the charts again from results.json

A run brings up the services its experiments need (`sdlab.infra.up`), runs each
experiment in turn with progress bars, prints its table, and writes `report.md`,
`results.json` and one PNG per chart. Results of experiments not selected this time
are kept from the previous report, so `--only` refreshes part of it.
"""

from __future__ import annotations

import asyncio
import functools
import os
import platform
import shlex
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter
from typing import Annotated, Any

import psutil
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sdlab import infra, systems
from sdlab.bench import report, seed
from sdlab.bench.experiment import REGISTRY, Bench, Experiment, Headline
from sdlab.bench.report import Result
from sdlab.config import settings
from sdlab.console import console, on_stdout, progress_console, spinner, stderr
from sdlab.failure import describe
from sdlab.infra.service import Endpoint

app = typer.Typer(
    help="Run the experiments on real services and write a report.", no_args_is_help=True
)


class UnknownExperiment(ValueError):
    """`--only` named no experiment and no system."""


def experiments() -> dict[str, type[Experiment]]:
    """Every registered experiment, by name (importing each system's experiment module),
    the foundation's first, then in the order of the systems' catalogue."""
    systems.modules("experiment")
    order = [system.name for system in [systems.FOUNDATION, *systems.SYSTEMS]]

    def rank(cls: type[Experiment]) -> int:
        return order.index(cls.system) if cls.system in order else len(order)

    return {cls.name: cls for cls in sorted(REGISTRY.values(), key=rank)}


def select(only: list[str] | None) -> list[type[Experiment]]:
    """The experiments named in `only` (by experiment or system name); all if empty.
    Raises UnknownExperiment, listing the names known, if one matches nothing."""
    known = experiments()
    if not only:
        return list(known.values())
    unknown = [o for o in only if not any(o in (c.name, c.system) for c in known.values())]
    if unknown:
        names = ", ".join(sorted({*known, *(c.system for c in known.values())}))
        raise UnknownExperiment(
            f"no experiment or system called {', '.join(unknown)}; known: {names}"
        )
    return [c for c in known.values() if c.name in only or c.system in only]


def run(
    selected: list[Experiment], *, quick: bool, out: Path, command: str | None = None
) -> list[Result]:
    """Run `selected` (experiments with their parameters), print each table, and write
    the merged report into `out`. `command` is how the report says to repeat the run
    (default: the `sdlab lab run` line for each experiment)."""
    needs = sorted({service for experiment in selected for service in experiment.services})
    live = progress_console()
    with spinner("bringing up the backing services..."):
        endpoints = infra.up(needs, report=console.log) if needs else {}
    results: list[Result] = []
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=live,
        redirect_stdout=on_stdout(live),
    )
    try:
        with progress:
            bench = Bench(endpoints, progress)
            for experiment in selected:
                console.rule(f"{experiment.name}: {experiment.title}")
                result = _run_one(
                    experiment, bench, quick=quick, endpoints=endpoints, command=command
                )
                if result.error:
                    stderr.print(f"[red]{experiment.name} failed:[/]\n{result.error}")
                else:
                    for table in report.rich_tables(result.rows, console.width):
                        console.print(table)
                    for note in result.notes:
                        console.print(f"  - {note}")
                results.append(result)
    finally:
        # Whatever finished is written, even if a later experiment was interrupted.
        if results:
            path = report.write(_merge(report.load(out), results), out)
            console.rule("summary")
            for table in report.rich_tables(report.summary_rows(results), console.width):
                console.print(table)
            console.print(f"report: {path}")
    return results


def _run_one(
    experiment: Experiment,
    bench: Bench,
    *,
    quick: bool,
    endpoints: dict[str, Endpoint],
    command: str | None,
) -> Result:
    cls = type(experiment)
    ran_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = command or f"sdlab lab run --only {cls.name}" + (" --quick" if quick else "")
    start = perf_counter()
    outcome, error, headline = None, None, None
    try:
        outcome = asyncio.run(experiment.run(bench))
    except Exception:
        error = traceback.format_exc(limit=-8)
    if outcome:
        try:
            headline = experiment.headline(outcome.rows)
        except Exception as exc:  # the rows are worth keeping without it
            outcome.notes.append(f"The headline could not be computed: {describe(exc)}")
    return Result(
        name=cls.name,
        system=cls.system,
        title=cls.title,
        description=cls.description(),
        params=experiment.params(),
        quick=quick,
        ran_at=ran_at,
        seconds=perf_counter() - start,
        command=command,
        environment=_environment({s: endpoints[s] for s in cls.services}),
        rows=outcome.rows if outcome else [],
        chart=outcome.chart if outcome else None,
        published=outcome.published if outcome else None,
        notes=outcome.notes if outcome else [],
        error=error,
        headline=headline,
    )


def rerender(out: Path) -> Path:
    """Write `out`'s report.md and charts again from its results.json, with each
    experiment's headline as its code declares it now and the seed's figures as
    `seed_figures.toml` has them now. FileNotFoundError if there are no results."""
    results = report.load(out)
    if not results:
        raise FileNotFoundError(f"no results in {out / 'results.json'}")
    known = experiments()
    for result in results:
        if result.name in known and not result.error:
            result.headline = _headline(known[result.name], result)
        if result.published and seed.is_seed(result.published):
            result.published = seed.published(result.published.key)
    return report.write(results, out)


def _headline(cls: type[Experiment], result: Result) -> Headline | None:
    """The headline `cls` declares for a recorded run (its parameters as recorded);
    the recorded one if the parameters no longer fit."""
    try:
        return cls(**result.params).headline(result.rows)
    except Exception:  # a run from before the rows changed shape
        return result.headline


def _merge(previous: list[Result], fresh: list[Result]) -> list[Result]:
    """Fresh results replace earlier ones of the same name; order follows the registry."""
    by_name = {r.name: r for r in previous} | {r.name: r for r in fresh}
    order = list(experiments())
    return sorted(
        by_name.values(), key=lambda r: order.index(r.name) if r.name in order else len(order)
    )


def _environment(endpoints: dict[str, Endpoint]) -> dict[str, object]:
    memory = psutil.virtual_memory().total / 2**30
    machine = (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
        f"{memory:.0f} GiB RAM, Python {platform.python_version()}"
    )
    services = [
        {
            "title": infra.service(e.service).title,
            "version": e.version,
            "address": e.address,
            "origin": e.origin,
        }
        for e in endpoints.values()
    ]
    return {"machine": machine, "services": services}


@app.command("run")
def run_command(
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            metavar="NAME",
            help="An experiment or system to run (repeatable); default: all.",
        ),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option("--quick", help="Small sizes: each experiment finishes in under a minute."),
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="Report folder (default: <SDLAB_REPORTS_DIR>/latest).")
    ] = None,
) -> None:
    """Run experiments, print their tables, and write report.md, results.json and charts.

    Examples:

      sdlab lab run --quick

      sdlab lab run --only roundtrip

      sdlab lab run --only pool --out /tmp/pool-report
    """
    try:
        chosen = select(only)
    except UnknownExperiment as exc:
        raise typer.BadParameter(str(exc), param_hint="--only") from None
    selected = [cls.quick() if quick else cls() for cls in chosen]
    run_and_exit(selected, quick=quick, out=out)


def run_and_exit(
    selected: list[Experiment], *, quick: bool, out: Path | None, command: str | None = None
) -> None:
    """`run`, for a command: the default report folder, and exit 1 if any failed."""
    results = run(
        selected, quick=quick, out=out or settings().reports_dir / "latest", command=command
    )
    failed = [r.name for r in results if r.error]
    if failed:
        stderr.print(f"[red]failed:[/] {', '.join(failed)}")
        raise typer.Exit(1)


# The options of every system's own experiment command (`sdlab pool experiment`, ...).
Quick = Annotated[bool, typer.Option("--quick", help="Small sizes: finishes in under a minute.")]
ReportDir = Annotated[
    Path | None,
    typer.Option("--out", help="Report folder (default: <SDLAB_REPORTS_DIR>/latest, merged)."),
]


def run_as_command(selected: Sequence[Experiment], *, quick: bool, out: Path | None) -> None:
    """`run_and_exit` for a system's own experiment command: the report says to repeat
    the run with that command, as it was typed."""
    run_and_exit(list(selected), quick=quick, out=out, command=shlex.join(["sdlab", *sys.argv[1:]]))


def renamed(app: typer.Typer, old: str, command: Callable[..., Any], *, system: str) -> None:
    """Keep `sdlab <system> <old>` working, hidden, as `command` under its new name,
    with a one-line warning on stderr, so that scripts written against the old name
    do not break."""
    new = command.__name__.replace("_", "-")

    @functools.wraps(command)
    def old_name(*args: Any, **kwargs: Any) -> Any:
        stderr.print(
            f"warning: `sdlab {system} {old}` is now `sdlab {system} {new}`; the old name will go",
            highlight=False,
        )
        return command(*args, **kwargs)

    app.command(old, hidden=True)(old_name)


@app.command("report")
def report_command(
    out: Annotated[
        Path | None, typer.Option(help="Report folder (default: <SDLAB_REPORTS_DIR>/latest).")
    ] = None,
) -> None:
    """Render report.md and the charts again from results.json, without running anything.

    Example:

      sdlab lab report --out /tmp/pool-report
    """
    folder = out or settings().reports_dir / "latest"
    try:
        path = rerender(folder)
    except FileNotFoundError as exc:
        stderr.print(f"[red]error:[/] {exc}; run `sdlab lab run` first", highlight=False)
        raise typer.Exit(1) from None
    console.print(f"report: {path}")


@app.command("list")
def list_command() -> None:
    """List the experiments, with their systems, services and parameters."""
    rows = []
    for cls in experiments().values():
        full, small = cls(), cls.quick()
        sizes = ", ".join(
            f"{key}={value}"
            + (f" (quick {small.params()[key]})" if small.params()[key] != value else "")
            for key, value in full.params().items()
        )
        rows.append(
            {
                "experiment": cls.name,
                "system": cls.system,
                "title": cls.title,
                "services": " ".join(cls.services),
                "parameters": sizes,
            }
        )
    console.print(report.rich_table(rows))
    console.print(f"run one with: {shlex.join(['sdlab', 'lab', 'run', '--only', 'NAME'])}")
