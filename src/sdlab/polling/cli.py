"""`sdlab polling`: serve the mock EC2 status service, follow a server, run the experiment."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import httpx
import typer

from sdlab import frontend, infra, lab, sql
from sdlab.console import console
from sdlab.polling.client import PollingClient
from sdlab.polling.fleet import Fleet
from sdlab.polling.model import Delays, PollingError, seed_ids
from sdlab.polling.store import DEFAULT_TABLE
from sdlab.pool import PoolError

DEFAULT_PORT = 8030  # each service its own default (docs/infra.md)

app = typer.Typer(
    help="Short and long polling (sdlab.polling): a mock EC2 status service whose "
    "clients follow a creation (TO_DO -> IN_PROGRESS -> DONE) by asking every interval "
    "or by holding a request until the status changes.\n\n"
    "The library is `from sdlab.polling import Fleet, Store, RedisChannel, ...`; see "
    "docs/polling.md.",
    no_args_is_help=True,
)


class ChannelKind(StrEnum):
    auto = "auto"
    redis = "redis"
    postgres = "postgres"
    none = "none"


@app.command()
def serve(
    host: Annotated[str, frontend.host_option()] = "127.0.0.1",
    port: Annotated[int, frontend.port_option()] = DEFAULT_PORT,
    db: Annotated[
        str,
        frontend.db_option(
            "The database: `mysql` or `postgres` (the server sdlab finds), or a URL: "
            "mysql://... (MariaDB, MySQL; a URL without a database uses `sdlab_polling`) "
            "or postgresql://..."
        ),
    ] = "mysql",
    channel: Annotated[
        ChannelKind,
        typer.Option(
            help="How processes on one database tell each other of changes: redis "
            "(pub/sub), postgres (LISTEN/NOTIFY; PostgreSQL only), none (a sweep finds "
            "them). auto: postgres for PostgreSQL, else redis."
        ),
    ] = ChannelKind.auto,
    redis: Annotated[
        str | None,
        typer.Option(metavar="URL", help="Redis for the redis channel (default: sdlab's)."),
    ] = None,
    table: Annotated[str, typer.Option(help="Table name (two services, two tables).")] = (
        DEFAULT_TABLE
    ),
    servers: Annotated[
        int, typer.Option(min=0, max=10_000, help="Servers server-1..N to add if missing.")
    ] = 5,
    to_do: Annotated[
        float, typer.Option(min=0, max=3600, help="Seconds a creation stays TO_DO.")
    ] = 2.0,
    in_progress: Annotated[
        float, typer.Option(min=0, max=3600, help="Seconds a creation stays IN_PROGRESS.")
    ] = 3.0,
    sweep: Annotated[
        float,
        typer.Option(
            min=0.01, help="Seconds between unprompted reads that find unannounced changes."
        ),
    ] = 1.0,
) -> None:
    """Serve the status service and its live page until Ctrl-C.

    Two processes on two ports with the same --db share the servers: a change made
    through one wakes the long polls waiting on the other, and either one finishes a
    creation the other started (it is scheduled in the database).

    Examples:

      sdlab polling serve                             # MariaDB + Redis on :8030, page at /

      sdlab polling serve --port 8031                 # a second process, same servers

      sdlab polling serve --db postgres --port 8032   # PostgreSQL, LISTEN/NOTIFY

      curl -X POST localhost:8030/create/server-1

      curl 'localhost:8031/long/status/server-1?since=6&timeout=30'
    """
    import uvicorn

    from sdlab.polling.service import create_app, poll_protocol

    try:
        db_url = frontend.database_url(db, "", postgres_database="postgres")
    except ValueError as exc:
        frontend.fail(exc, system="polling")
    kind = channel.value
    if kind == "auto":
        kind = "postgres" if db_url.startswith("postgres") else "redis"
    redis_url = redis or (infra.up(["redis"])["redis"].url if kind == "redis" else None)

    async def run() -> None:
        fleet = await Fleet.open(
            db_url,
            channel=kind,
            redis_url=redis_url,
            table=table,
            delays=Delays(to_do, in_progress),
            sweep=sweep,
        )
        try:
            await fleet.start()
        except BaseException:
            await fleet.close()
            raise
        config = uvicorn.Config(
            create_app(fleet, seed_ids(servers)),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            proxy_headers=False,  # no proxy in front; its middleware costs every request
            backlog=4096,  # thousands of long-polling clients may connect at once
            timeout_keep_alive=65,  # longer than the longest poll, so connections are reused
            http=poll_protocol(fleet),  # plain long polls answered in the protocol
        )
        server = _releasing_server(config, fleet)
        store = fleet.store
        console.print(
            f"serving http://{host}:{port}: {store.dialect.engine} at {sql.address_of(db_url)}, "
            f"table {store.database}.{table}, channel {fleet.channel or 'none'}; Ctrl-C to stop",
            highlight=False,
        )
        await server.serve()

    _run(run)


def _releasing_server(config: Any, fleet: Fleet) -> Any:
    """uvicorn's server, except that at shutdown the long polls are answered (503) at
    once instead of holding the shutdown until their timeouts."""
    import uvicorn

    class ReleasingServer(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            # Everything made so far lives as long as the process: out of the
            # collector's sight, a full collection walks only what the connections make
            # (thousands of parked polls; a pause in the middle of a fan-out is its p99).
            gc.collect()
            gc.freeze()

        async def shutdown(self, sockets: Any = None) -> None:
            fleet.release_waiters()
            await super().shutdown(sockets)

    return ReleasingServer(config)


@app.command(cls=frontend.respelled({"--url": "--service-url"}))
def watch(
    server_id: Annotated[str, typer.Argument(metavar="SERVER_ID", help="Which server.")],
    url: Annotated[str, frontend.service_url_option("polling")] = (
        f"http://127.0.0.1:{DEFAULT_PORT}"
    ),
    create: Annotated[bool, typer.Option("--create", help="Create it first.")] = False,
    interval: Annotated[
        float | None,
        typer.Option(min=0.01, help="Short poll every INTERVAL seconds instead of long polling."),
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=0, max=60, help="Seconds each long poll may be held.")
    ] = 30.0,
) -> None:
    """Follow a server until it is DONE, printing each change as it arrives.

    Each line says how long after the change (the database's time) it was seen.

    Examples:

      sdlab polling watch server-1 --create

      sdlab polling watch server-2 --create --interval 0.5 --service-url http://127.0.0.1:8031
    """

    async def run() -> None:
        requests = 0

        async def count(request: httpx.Request) -> None:
            nonlocal requests
            requests += 1

        async with PollingClient(url) as client:
            client.http.event_hooks = {"request": [count], "response": []}
            if create:
                await client.create(server_id)
            async for server in client.follow(server_id, timeout=timeout, interval=interval):
                late = (datetime.now(UTC) - server.changed_at).total_seconds() * 1000
                console.print(
                    f"{server.changed_at:%H:%M:%S.%f}  {server.status.value:<16} "
                    f"version {server.version:<6} seen {late:7.1f} ms after the change, "
                    f"{requests} requests so far",
                    highlight=False,
                )

    _run(run)


@app.command()
def experiment(
    quick: lab.Quick = False,
    out: lab.ReportDir = None,
) -> None:
    """Short polling against long polling: requests, detection delay, server CPU.

    K clients follow one creation by short polling at interval I, and by long polling.

    The server is `sdlab polling serve` in a process of its own; the clients run in
    other processes, so their work is not counted as the server's.

    Examples:

      sdlab polling experiment --quick

      sdlab polling experiment --out /tmp/polling-report
    """
    from sdlab.polling.experiment import ALL

    chosen = [cls.quick() if quick else cls() for cls in ALL]
    lab.run_as_command(chosen, quick=quick, out=out)


def _run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run on uvloop when it is installed; known failures are one line on stderr."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but optional here
        factory = None
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main())
    except (PollingError, sql.SQLError, PoolError, httpx.HTTPError, ValueError) as exc:
        frontend.fail(exc, system="polling")
