"""`sdlab locks`: watch processes lose updates without a lock, and measure the locks."""

from __future__ import annotations

from contextlib import ExitStack
from enum import Enum
from typing import Annotated

import typer

from sdlab import frontend, infra, lab
from sdlab.bench.report import rich_table
from sdlab.console import console, spinner
from sdlab.locks import demo as counter_demo
from sdlab.locks.experiment import LockCost

app = typer.Typer(
    help="Remote locks (sdlab.locks): one Redis, a Redlock quorum, the databases' own "
    "locks, and fencing tokens.\n\nThe library is `from sdlab.locks import RedisLock, "
    "Redlock, MariaDBLock, PostgresLock, FencedStore`; see docs/locks.md.",
    no_args_is_help=True,
)

Kind = Enum("Kind", {name: name for name in counter_demo.BACKENDS}, type=str)  # type: ignore[misc]  # functional Enum


@app.command(cls=frontend.respelled({"--backend": "--kind", "-b": "-k"}))
def demo(
    kind: Annotated[
        list[Kind] | None,
        typer.Option(
            "--kind",
            "-k",
            help="Lock to use (repeatable): none, redis, redlock (5 private Redis "
            "servers), mysql (GET_LOCK), postgres (advisory). Default: all.",
        ),
    ] = None,
    processes: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 8,
    increments: Annotated[
        int, typer.Option(min=1, max=1_000_000, help="Increments per process.")
    ] = 500,
) -> None:
    """Processes increment a shared Redis counter by reading it and writing it back.

    Without a lock, updates are lost (two processes read the same value); under any of
    the locks the count is exact. Each process is a real OS process.

    Examples:

      sdlab locks demo

      sdlab locks demo -k none -k redis --processes 16 --increments 200
    """
    chosen = [k.value for k in kind] if kind else list(counter_demo.BACKENDS)
    endpoints = infra.up(["redis", "mysql", "postgres"], report=console.log)
    rows = []
    with ExitStack() as stack:
        quorum: list[str] = []
        if "redlock" in chosen:
            with spinner("starting 5 private Redis servers for Redlock..."):
                quorum = [s.url for s in stack.enter_context(infra.redis(5, durable=True))]
        for name in chosen:
            setup = counter_demo.Setup(
                name,
                endpoints["redis"].url,
                quorum,
                endpoints["mysql"].url,
                endpoints["postgres"].url,
            )
            with spinner(f"{name}: {processes} processes x {increments} increments..."):
                rows.append(counter_demo.run(setup, processes, increments).row())
    console.print(rich_table(rows))


@app.command()
def experiment(
    quick: lab.Quick = False,
    out: lab.ReportDir = None,
) -> None:
    """Acquire + release latency and contended throughput, ours beside redis-py's Lock,
    python-redis-lock and pottery's Redlock.

    Examples:

      sdlab locks experiment --quick

      sdlab locks experiment --out /tmp/locks-report
    """
    chosen = LockCost.quick() if quick else LockCost()
    lab.run_as_command([chosen], quick=quick, out=out)


lab.renamed(app, "bench", experiment, system="locks")
