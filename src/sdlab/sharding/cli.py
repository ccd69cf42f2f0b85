"""`sdlab sharding`: serve users over shard servers, reshard them online, the experiment."""

from __future__ import annotations

import asyncio
import signal
from contextlib import ExitStack
from enum import StrEnum
from typing import Annotated

import httpx
import typer
from rich.table import Table

from sdlab import frontend, infra, lab, sql
from sdlab.console import console, stderr
from sdlab.infra import Instances
from sdlab.sharding.repository import ShardedUsers, create
from sdlab.sharding.routers import ROUTERS
from sdlab.sharding.shardmap import NoMap, ShardingError

DEFAULT_PORT = 8017  # issue 17; each service its own default (docs/infra.md)
SHARD_DATABASE = "sdlab_shard"

app = typer.Typer(
    help="Database sharding (sdlab.sharding): users spread over separate MariaDB (or "
    "PostgreSQL) servers by one of five routers, merged listings, online resharding.\n\n"
    "The library is `from sdlab.sharding import ShardedUsers, make_router, reshard`; see "
    "docs/sharding.md.",
    no_args_is_help=True,
)


class Engine(StrEnum):
    mysql = "mysql"
    postgres = "postgres"


class RouterName(StrEnum):
    modulo = "modulo"
    range = "range"
    ring = "ring"
    jump = "jump"
    rendezvous = "rendezvous"


assert set(RouterName) == set(ROUTERS), "the CLI's routers are the library's"


@app.command()
def serve(
    host: Annotated[str, frontend.host_option()] = "127.0.0.1",
    port: Annotated[int, frontend.port_option()] = DEFAULT_PORT,
    shards: Annotated[
        int, typer.Option(min=1, max=16, help="Shard servers to start (private, this run).")
    ] = 2,
    router: Annotated[RouterName, typer.Option(help="How keys are routed.")] = RouterName.modulo,
    engine: Annotated[Engine, typer.Option(help="What the shard servers are.")] = Engine.mysql,
    catalog: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="Join the shard map in this catalog database instead (starts no servers): "
            "another router process of a running `serve`, which prints its catalog.",
        ),
    ] = None,
) -> None:
    """Serve the users API over shard servers until Ctrl-C.

    Starts --shards private shard servers (they stop with this process), keeps the
    shard map in a catalog database on sdlab's MariaDB, and serves on --port.

    Examples:

      sdlab sharding serve                           # 2 MariaDB shards, modulo, :8017

      sdlab sharding serve --shards 3 --router ring

      sdlab sharding serve --port 8018 --catalog mysql://root@127.0.0.1:3306/sdlab_sharding_8017

      curl -X POST localhost:8017/users -H 'content-type: application/json' \\
        -d '{"name": "alice", "email": "alice@example.com"}'

      curl 'localhost:8017/users?limit=10'

      sdlab sharding reshard --to 3                  # while it serves
    """
    import uvicorn

    from sdlab.sharding.service import create_app

    # uvicorn shuts down gracefully on SIGTERM, then raises it again with the handler it
    # found: by default that ends the process at once, leaving the shard servers behind.
    signal.signal(signal.SIGTERM, _interrupted)
    with ExitStack() as stack:
        started: list[Instances] = []

        def start(n: int) -> list[str]:
            servers = infra.postgres(n) if engine is Engine.postgres else infra.mariadb(n)
            stack.callback(servers.close)
            started.append(servers)
            return [sql.with_database(url, SHARD_DATABASE) for url in servers.urls]

        if catalog is None:
            console.print(f"starting {shards} {engine.value} shard servers ...")
            shard_urls = start(shards)
            catalog_url = sql.with_database(
                infra.up(["mysql"])["mysql"].url, f"sdlab_sharding_{port}"
            )
        else:
            shard_urls, catalog_url = [], catalog

        async def run() -> None:
            if catalog is None:
                await sql.drop_database(catalog_url)  # a map from an earlier run names dead servers
                await create(catalog_url, shard_urls, router.value)
            users = await ShardedUsers.open(catalog_url)

            async def shard_source(n: int) -> list[str]:
                current = list(users.map.shards)
                if n > len(current):
                    current += await asyncio.to_thread(start, n - len(current))
                return current[:n]

            try:
                config = uvicorn.Config(
                    create_app(users, shard_source if catalog is None else None),
                    host=host,
                    port=port,
                    log_level="warning",
                    access_log=False,
                    proxy_headers=False,
                )
                m = users.map
                console.print(
                    f"serving http://{host}:{port}: {len(m.shards)} shards by {m.router} "
                    f"(map version {m.version}): "
                    + ", ".join(sql.address_of(u) for u in m.shards)
                    + f"; catalog {catalog_url}; Ctrl-C to stop",
                    highlight=False,
                )
                await uvicorn.Server(config).serve()
            finally:
                await users.close()

        _run(run())


@app.command(cls=frontend.respelled({"--url": "--service-url"}))
def reshard(
    to: Annotated[int, typer.Option("--to", min=1, max=16, help="Shards after the move.")],
    router: Annotated[
        RouterName | None, typer.Option(help="Route by this router after the move.")
    ] = None,
    url: Annotated[str, frontend.service_url_option("sharding")] = (
        f"http://127.0.0.1:{DEFAULT_PORT}"
    ),
) -> None:
    """Move a running service's users onto --to shards, online.

    The service starts the shard servers it needs, copies the users whose shard
    changes, replays the writes made meanwhile, and cuts over by one map version;
    writes pause only for the cutover.

    Examples:

      sdlab sharding reshard --to 3

      sdlab sharding reshard --to 3 --router jump --service-url http://127.0.0.1:8017
    """
    body: dict[str, object] = {"shards": to}
    if router is not None:
        body["router"] = router.value
    try:
        answer = httpx.post(f"{url}/reshard", json=body, timeout=600)
    except httpx.HTTPError as exc:
        if frontend.unreachable(exc) is None:
            stderr.print(f"[red]error:[/] the service at {url}: {exc}", highlight=False)
            raise typer.Exit(1) from None
        frontend.fail(exc, system="sharding")
    if answer.status_code != 200:
        stderr.print(f"[red]error:[/] {answer.json().get('detail', answer.text)}", highlight=False)
        raise typer.Exit(1)
    table = Table("", "")
    for key, value in answer.json().items():
        table.add_row(key, str(value))
    console.print(table)


@app.command()
def experiment(quick: lab.Quick = False, out: lab.ReportDir = None) -> None:
    """Keys moved per router, load skew, router overhead, and Spider beside it.

    Examples:

      sdlab sharding experiment --quick

      sdlab sharding experiment --out /tmp/sharding-report
    """
    from sdlab.sharding.experiment import ALL

    chosen = [cls.quick() if quick else cls() for cls in ALL]
    lab.run_as_command(chosen, quick=quick, out=out)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _run(main: object) -> None:
    try:
        asyncio.run(main)  # type: ignore[arg-type]
    except (ShardingError, NoMap, sql.SQLError, ValueError) as exc:
        frontend.fail(exc, system="sharding")
