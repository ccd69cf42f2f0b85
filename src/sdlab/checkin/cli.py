"""`sdlab checkin`: serve the desk and its live page, book one crowd, run the experiment."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from sdlab import frontend, lab, sql
from sdlab.checkin import schema, seatmap
from sdlab.checkin.booking import CheckinError
from sdlab.checkin.strategies import NAMES, Passenger, assigned, book, sessions
from sdlab.console import console

DEFAULT_PORT = 8015  # each service its own default (docs/infra.md)
DATABASE = "sdlab_checkin"

app = typer.Typer(
    help="Airline seat check-in under contention (sdlab.checkin): passengers check in all "
    "at once, sequentially, without a lock (lost updates), with SELECT ... FOR UPDATE, "
    "and with FOR UPDATE SKIP LOCKED, on MariaDB and PostgreSQL.\n\n"
    "The library is `from sdlab.checkin import Desk, Passenger, book, sessions`; see "
    "docs/checkin.md.",
    no_args_is_help=True,
)

Db = Annotated[
    str,
    frontend.db_option(
        "The database: `mysql` or `postgres` (the server sdlab finds, database "
        f"`{DATABASE}`), or a URL (mysql://... or postgresql://...)."
    ),
]
RENAMED = frontend.respelled({"--backend": "--db"})


@app.command(cls=RENAMED)
def serve(
    host: Annotated[str, frontend.host_option()] = "127.0.0.1",
    port: Annotated[int, frontend.port_option()] = DEFAULT_PORT,
    db: Db = "mysql",
    pool: Annotated[int, typer.Option(min=1, max=500, help="Pooled database sessions.")] = 20,
) -> None:
    """Serve the check-in API and the live seat map until Ctrl-C.

    An empty database gets a demo airline: two airlines, four flights, eight trips of
    120 seats, users 1 to 1,000.

    Examples:

      sdlab checkin serve --port 8015                      # MariaDB; page at /

      sdlab checkin serve --db postgres --port 8016

      curl localhost:8015/trips

      curl --json '{"user_id": 7, "seat": "12C"}' localhost:8015/trips/1/checkin
    """
    import uvicorn

    from sdlab.checkin.service import create_app

    try:
        url = frontend.database_url(db, DATABASE)
    except ValueError as exc:
        frontend.fail(exc, system="checkin")
    console.print(
        f"serving http://{host}:{port}: {sql.redact(url)}; Ctrl-C to stop", highlight=False
    )
    try:
        uvicorn.run(
            create_app(url, pool=pool),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            proxy_headers=False,
            timeout_graceful_shutdown=3,
        )
    except sql.SQLError as exc:
        frontend.fail(exc, system="checkin")


@app.command("book", cls=RENAMED)
def book_command(
    strategy: Annotated[
        str, typer.Argument(metavar="STRATEGY", help=f"One of: {', '.join(NAMES)}.")
    ] = "skip-locked",
    users: Annotated[
        int, typer.Option(min=1, max=1000, help="Passengers, all at once, one session each.")
    ] = 120,
    db: Db = "mysql",
) -> None:
    """One crowd on one fresh trip of 120 seats: the time, the seats, the retries, the map.

    The trip lives in a scratch database on the --db server, dropped afterwards.

    Examples:

      sdlab checkin book no-lock

      sdlab checkin book skip-locked --users 90 --db postgres
    """
    if strategy not in NAMES:
        raise typer.BadParameter(f"choose one of {', '.join(NAMES)}", param_hint="STRATEGY")

    async def run() -> None:
        server = frontend.database_url(db, "")
        async with sql.scratch_database(server, prefix="checkin_book") as url:
            look = await sql.connect(url)
            try:
                await schema.create(look)
                await schema.add_users(look, 1, users)
                (trip,) = await schema.add_trips(look, 1)
                async with sessions(url, users) as own:
                    crowd = [Passenger(u, trip, s.transaction) for u, s in enumerate(own, 1)]
                    done = await book(strategy, crowd)
                seated = await assigned(look, [trip])
                taken = await seatmap.taken_seats(look, trip)
            finally:
                await look.close()
        console.print(
            f"{done.strategy}: {done.ms:.1f} ms, {done.told} passengers told they have a "
            f"seat, {seated} seats assigned, {done.retries} retries"
            + (f" {dict(done.tally)}" if done.tally else ""),
            highlight=False,
        )
        console.print(seatmap.text(seatmap.render(taken)), highlight=False)

    try:
        asyncio.run(run())
    except (CheckinError, sql.SQLError, ValueError) as exc:
        frontend.fail(exc, system="checkin")


@app.command()
def experiment(quick: lab.Quick = False, out: lab.ReportDir = None) -> None:
    """The seed's table on MariaDB and PostgreSQL beside its published numbers, then many
    trips at once over a pool, and everyone wanting a window seat.

    Where a server cannot hold one session per passenger (PostgreSQL here allows 100),
    the experiment starts a private one with max_connections = 200.

    Examples:

      sdlab checkin experiment --quick

      sdlab checkin experiment --out /tmp/checkin-report
    """
    from sdlab.checkin.experiment import ALL

    chosen = [cls.quick() if quick else cls() for cls in ALL]
    lab.run_as_command(chosen, quick=quick, out=out)
