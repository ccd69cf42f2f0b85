"""`sdlab ids`: make ids, decode them, serve them over HTTP, measure the generators."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from sdlab import frontend, infra, lab
from sdlab.config import settings
from sdlab.console import console
from sdlab.ids.generators import Generators
from sdlab.ids.kinds import DECODE_DEFAULT, KINDS, DecodableName, KindName
from sdlab.ids.layout import InvalidId
from sdlab.ids.lease import NoMachineId
from sdlab.ids.simple import StateInUse
from sdlab.ids.snowflake import ClockMovedBackwards
from sdlab.ids.tickets import NoTicketServer
from sdlab.locks import LockLost

DEFAULT_PORT = 8040  # each service its own default (docs/infra.md)

app = typer.Typer(
    help="Distributed id generation (sdlab.ids): Snowflake, Instagram, Flickr ticket "
    "servers, a central counter service, the seed's simple generator, ULID and UUIDv7.\n\n"
    "The library is `from sdlab.ids import Snowflake, ...`; see docs/ids.md.",
    no_args_is_help=True,
)

Machine = Annotated[
    int | None,
    typer.Option(
        min=0,
        max=1023,
        help="Machine id for snowflake and simple (default: lease a free one from Redis).",
    ),
]
StateDir = Annotated[
    Path | None,
    typer.Option(help="Where `simple` keeps its counter (default: <SDLAB_STATE_DIR>/ids)."),
]
Tickets = Annotated[
    list[str] | None,
    frontend.db_option(
        "A MariaDB ticket server, for kind ticket (repeat for each; `mysql` is the one "
        "sdlab finds; default: two databases on it, for trying it out).",
        metavar="mysql|URL",
    ),
]
RENAMED = frontend.respelled({"--ticket-server": "--db"})


def _generators(
    kinds_needed: set[str], machine: int | None, state_dir: Path | None, tickets: list[str] | None
) -> Generators:
    wanted: set[str] = set().union(*(KINDS[kind].needs for kind in kinds_needed))
    needs = wanted & {"mysql", "postgres"}
    if machine is None and "machine" in wanted:
        needs.add("redis")  # the machine id is leased there
    endpoints = infra.up(sorted(needs)) if needs else {}
    return Generators(
        state_dir or settings().state_dir / "ids",
        mysql_url=endpoints["mysql"].url if "mysql" in endpoints else "",
        postgres_url=endpoints["postgres"].url if "postgres" in endpoints else "",
        redis_url=endpoints["redis"].url if "redis" in endpoints else "",
        machine=machine,
        ticket_urls=[frontend.database_url(t, "") for t in tickets or []],
    )


@app.command(cls=RENAMED)
def gen(
    kind: Annotated[KindName, typer.Argument(help="Which kind of id.")],
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="How many.")] = 1,
    machine: Machine = None,
    state_dir: StateDir = None,
    service: Annotated[str, typer.Option(help="Counter name, for kind central.")] = "default",
    db: Tickets = None,
    as_int: Annotated[
        bool,
        typer.Option("--int", help="Print ULIDs and UUIDv7s as their integer, in decimal."),
    ] = False,
) -> None:
    """Print ids, one per line, in the order made (fast enough to pipe millions): in
    decimal, ULIDs as 26 characters of Crockford base32, UUIDv7s as UUID text.

    Examples:

      sdlab ids gen snowflake --machine 7 -n 5

      sdlab ids gen ulid -n 3 --int

      sdlab ids gen snowflake -n 1000000 > ids.txt

      sdlab ids gen central --service orders -n 3
    """
    generators = _generators({kind.value}, machine, state_dir, db)
    write = (lambda ids: list(map(str, ids))) if as_int else KINDS[kind.value].texts

    async def run() -> None:
        try:
            left = count
            while left:
                chunk = min(left, 100_000)
                ids = await generators.make(kind.value, chunk, service=service)
                # From a thread: a slow reader must not stop the event loop, which renews
                # the machine id lease.
                await asyncio.to_thread(sys.stdout.write, "\n".join(write(ids)) + "\n")
                left -= chunk
        finally:
            await generators.close()

    try:
        asyncio.run(run())
    except BrokenPipeError:  # `| head`: the reader has all it wanted
        sys.stderr.close()
    except (StateInUse, LockLost, NoMachineId, NoTicketServer, ClockMovedBackwards) as exc:
        frontend.fail(exc, system="ids")


@app.command()
def decode(
    value: Annotated[
        str, typer.Argument(metavar="ID", help="The id as its kind writes it, or in decimal.")
    ],
    kind: Annotated[DecodableName, typer.Option(help="How the id is laid out.")] = DECODE_DEFAULT,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show an id's time (ISO 8601, UTC), machine or shard, and sequence; refuse an id
    that cannot be of the kind (UUID text as a snowflake, a time before the kind existed).

    Examples:

      sdlab ids decode 2125551808964227073

      sdlab ids decode 4209119170685572097 --kind instagram

      sdlab ids decode 01a21274-de85-76eb-bfd3-666d93b60d22 --kind uuid7

      sdlab ids decode 01M8XQGYTJZJA6ZX8HK67E41B7 --kind ulid
    """
    chosen = KINDS[kind.value]
    try:
        fields = chosen.describe(chosen.read(value))
    except InvalidId as exc:
        frontend.fail(exc, system="ids")
    if as_json:
        typer.echo(json.dumps(fields))
    else:
        for key, field_value in fields.items():
            console.print(f"{key:>9}  {field_value}", highlight=False)


@app.command(cls=RENAMED)
def serve(
    host: Annotated[str, frontend.host_option()] = "127.0.0.1",
    port: Annotated[int, frontend.port_option()] = DEFAULT_PORT,
    machine: Machine = None,
    state_dir: StateDir = None,
    db: Tickets = None,
) -> None:
    """Serve ids over HTTP until Ctrl-C.

    POST /ids/{kind}?count=N, POST /ids/central/{service}?count=N, GET /decode/{id}?kind=.
    Ids are JSON strings (JavaScript numbers cannot hold 64 bits): ULIDs and UUIDv7s in
    their text, or as decimal integers with ?format=int.

    Example:

      sdlab ids serve &  curl -X POST 'localhost:8040/ids/snowflake?count=3'
    """
    import uvicorn

    from sdlab.ids.service import create_app

    generators = _generators(set(KINDS), machine, state_dir, db)
    uvicorn.run(create_app(generators), host=host, port=port, log_level="warning")


@app.command()
def experiment(
    quick: lab.Quick = False,
    seed_sizes: Annotated[
        bool,
        typer.Option(
            "--seed-sizes",
            help="Only the storage experiments, at the seed's sizes: 6 M-row tables, 1 M "
            "inserts a round up to 5 M rows, 50 connections (an hour or more).",
        ),
    ] = False,
    out: lab.ReportDir = None,
) -> None:
    """Ids per second of each generator beside snowflake-id, python-ulid and uuid6, and
    the seed's storage experiments (each with a chart, beside the seed's numbers).

    Examples:

      sdlab ids experiment --quick

      sdlab ids experiment --seed-sizes
    """
    from sdlab.ids import experiment as experiments

    if seed_sizes:
        chosen = experiments.seed_sizes()
    else:
        chosen = [cls.quick() if quick else cls() for cls in experiments.ALL]
    lab.run_as_command(chosen, quick=quick, out=out)


lab.renamed(app, "bench", experiment, system="ids")
