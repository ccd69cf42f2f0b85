"""`sdlab pool`: the connection pool's experiments, from the command line."""

from __future__ import annotations

from typing import Annotated

import typer

from sdlab import lab
from sdlab.pool.experiment import AcquireRelease, PoolPeers, PoolVersusNoPool

app = typer.Typer(
    help="Connection pool (sdlab.pool): why pool, and what a pool costs.\n\n"
    "The library is `from sdlab.pool import Pool, MariaDB, PostgreSQL`; see docs/pool.md.",
    no_args_is_help=True,
)

Size = Annotated[int, typer.Option(min=1, max=1000, help="Connections in each pool.")]


@app.command()
def experiment(
    tasks: Annotated[
        list[int] | None,
        typer.Option(
            "--tasks",
            "-n",
            min=1,
            max=100_000,
            metavar="N",
            help="Concurrent tasks (repeatable). Default: 10 100 200 500 1000 10000.",
        ),
    ] = None,
    size: Size = 10,
    peers: Annotated[
        bool,
        typer.Option(
            "--peers/--no-peers",
            help="Also run the pooled workload through asyncmy's pool, SQLAlchemy and "
            "psycopg_pool (experiment pool-peers).",
        ),
    ] = True,
    quick: lab.Quick = False,
    out: lab.ReportDir = None,
) -> None:
    """The seed's experiment: pool vs a new connection per task, on MariaDB.

    N tasks each run SELECT SLEEP(0.01) on MariaDB, with a new connection per task
    (until the server's max_connections says no) and through a
    pool, beside the floor N x 10 ms / size and the seed's published numbers.

    Examples:

      sdlab pool experiment --quick

      sdlab pool experiment -n 100 -n 1000 --no-peers

      sdlab pool experiment --size 20 --out /tmp/pool-report
    """
    versus = PoolVersusNoPool.quick() if quick else PoolVersusNoPool()
    side = PoolPeers.quick() if quick else PoolPeers()
    for chosen in (versus, side):
        chosen.size = size
        if tasks:
            chosen.tasks = tuple(tasks)
    lab.run_as_command([versus, side] if peers else [versus], quick=quick, out=out)


@app.command()
def bench(
    ops: Annotated[
        int, typer.Option(min=100, help="Acquire + release per round and case.")
    ] = AcquireRelease.ops,
    rounds: Annotated[
        int, typer.Option(min=1, max=100, help="Rounds, interleaved across pools; best wins.")
    ] = AcquireRelease.rounds,
    tasks: Annotated[
        int, typer.Option(min=2, max=10_000, help="Tasks sharing the pool in the second case.")
    ] = AcquireRelease.tasks,
    size: Size = AcquireRelease.size,
    quick: lab.Quick = False,
    out: lab.ReportDir = None,
) -> None:
    """What a pool costs by itself: acquire + release with no query.

    Measured for sdlab.pool, asyncmy's pool, SQLAlchemy (MariaDB) and psycopg_pool
    (PostgreSQL), as microseconds
    per operation and as a ratio to psycopg_pool.

    Examples:

      sdlab pool bench --quick

      sdlab pool bench --ops 200000 --rounds 7
    """
    chosen = (
        AcquireRelease.quick()
        if quick
        else AcquireRelease(ops=ops, rounds=rounds, tasks=tasks, size=size)
    )
    lab.run_as_command([chosen], quick=quick, out=out)
