"""`sdlab infra`: see, start and stop the backing services."""

from __future__ import annotations

import json
import signal
from enum import Enum
from typing import Annotated

import typer
from rich.table import Table

from sdlab.console import console, spinner, stderr
from sdlab.frontend import Unreachable
from sdlab.infra import instance, resolve
from sdlab.infra.service import Endpoint
from sdlab.infra.services import SERVICES

app = typer.Typer(
    help="Backing services: find a running one, or start a private one.\n\n"
    "Each service is looked for at the URL in SDLAB_<SERVICE>_URL if set, then at the "
    "private instance sdlab manages under .sdlab/, then at its usual local port; "
    "`up` starts a private instance for any that is missing.",
    no_args_is_help=True,
)

ServiceName = Enum("ServiceName", {name: name for name in SERVICES}, type=str)  # type: ignore[misc]  # functional Enum
Services = Annotated[
    list[ServiceName] | None,
    typer.Argument(help="Services to act on (default: all).", show_default=False),
]


def _names(services: list[ServiceName] | None) -> list[str] | None:
    return [s.value for s in services] if services else None


@app.command()
def up(
    services: Services = None,
    private: Annotated[
        bool,
        typer.Option(
            "--private", help="Start private instances even where a local server answers."
        ),
    ] = False,
    install: Annotated[
        bool,
        typer.Option(
            "--install",
            help="First apt-get install missing server packages and client tools "
            "(chromium, redis-tools, wrk), as root.",
        ),
    ] = False,
) -> None:
    """Make the services reachable, starting private instances where needed.

    Examples:

      sdlab infra up                 # all five services

      sdlab infra up mysql redis     # just these

      sdlab infra up --private kafka # a private broker under .sdlab/managed/kafka
    """
    with spinner("looking for the backing services..."):
        endpoints = resolve.up(
            _names(services), private=private, install=install, report=console.log
        )
    console.print(_endpoint_table(list(endpoints.values())))


@app.command()
def status(
    services: Services = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Probe each service where it is expected; exit 1 if any does not answer.

    Starts nothing. Each probe speaks the service's own protocol (a query, PING,
    an AMQP handshake, a Kafka metadata request) and reports the server's version.
    """
    report = resolve.status(_names(services))
    if as_json:
        rows = [
            {
                "service": h.endpoint.service,
                "url": h.endpoint.url,
                "origin": h.endpoint.origin,
                "detail": h.detail,
                "version": h.version,
                "healthy": h.healthy,
                "problem": h.problem,
                "hint": h.hint or None,
            }
            for h in report
        ]
        typer.echo(json.dumps(rows, indent=2))
    else:
        table = Table(title="sdlab backing services")
        table.add_column("service", no_wrap=True)
        table.add_column("address", no_wrap=True)
        table.add_column("version", overflow="fold")
        table.add_column("origin", no_wrap=True)
        table.add_column("healthy")
        for h in report:
            healthy = "[green]yes[/]" if h.healthy else "[red]no[/]"
            table.add_row(
                h.title, h.endpoint.address, h.version or "-", origin(h.endpoint), healthy
            )
        console.print(table)
    bad = [h for h in report if not h.healthy]
    for h in bad:
        assert h.problem is not None
        where = Unreachable(h.title, h.endpoint.address, h.problem, h.hint)
        stderr.print(f"sdlab: {where}", highlight=False)
    if bad:
        raise typer.Exit(1)


@app.command()
def down() -> None:
    """Stop the private instances sdlab started here, and remove their data.

    Servers sdlab did not start (an SDLAB_*_URL, a system service on its usual
    port) are left alone, and so are extra instances whose owner still runs.
    """
    stopped = resolve.down(report=console.log)
    if not stopped:
        console.print("no private instances were running")


@app.command()
def run(
    service: Annotated[ServiceName, typer.Argument(help="Which server to run.")],
    count: Annotated[
        int, typer.Option("-n", "--count", min=1, max=16, help="How many independent servers.")
    ] = 1,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "-o",
            "--option",
            metavar="KEY=VALUE",
            help="A server setting, repeatable (a mariadbd/redis-server/tansu flag, a "
            "PostgreSQL -c setting, a RABBITMQ_* variable).",
        ),
    ] = None,
) -> None:
    """Run extra private servers in the foreground until Ctrl-C, then remove them.

    Examples:

      sdlab infra run mysql -n 2                       # two replication-ready MariaDB

      sdlab infra run redis -n 5 -o appendonly=yes     # five Redis for a quorum

      sdlab infra run kafka
    """
    options = dict(_key_value(text) for text in option or [])
    svc = SERVICES[service.value]
    root = resolve.state_root()
    with spinner(f"starting {count} private {svc.title}..."):
        servers = instance.start_many(svc, count, options=options, root=root)
    with servers:
        console.print(
            _endpoint_table(
                [Endpoint(svc.name, s.url, "managed") for s in servers],
                [s.pid for s in servers],
            )
        )
        stop = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # before saying so: no early-signal race
        console.print("[dim]Ctrl-C stops them and removes their data.[/]")
        signal.sigwait(stop)


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise typer.BadParameter(f"{text!r} is not KEY=VALUE", param_hint="--option")
    return key, value


def origin(endpoint: Endpoint, pid: int | None = None) -> str:
    """Where a service was found, in the words `up`, `status` and `run` all use:
    `external, usual port`, `external, SDLAB_MYSQL_URL`, `managed, pid 1234`."""
    svc = SERVICES[endpoint.service]
    if endpoint.origin == "env":
        return f"external, {svc.env_var}"
    if endpoint.origin == "local":
        return "external, usual port"
    if pid is None:
        own = resolve.managed(svc)
        pid = own.pid if own is not None and own.url == endpoint.url else None
    return f"managed, pid {pid}" if pid else "managed"


def _endpoint_table(endpoints: list[Endpoint], pids: list[int | None] | None = None) -> Table:
    table = Table()
    for column in ("service", "url", "version", "origin"):
        table.add_column(column)
    for i, e in enumerate(endpoints):
        where = origin(e, pids[i] if pids else None)
        table.add_row(SERVICES[e.service].title, e.url, e.version or "-", where)
    return table
