"""`sdlab replica`: a replicated MariaDB cluster of private servers, and its experiment."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from sdlab import infra, lab
from sdlab.console import console, spinner, stderr
from sdlab.infra.instance import Instances
from sdlab.replica import ReplicaError, failover, observe_all, setup, switchover
from sdlab.replica.experiment import EXPERIMENTS
from sdlab.replica.topology import Topology

GROUP = "replica"  # the kept servers live under <state dir>/managed/replica/

app = typer.Typer(
    help="A MariaDB primary and read replicas (sdlab.replica): GTID replication from a "
    "consistent snapshot, semi-sync on request, switchover and failover.\n\nThe library "
    "is `from sdlab.replica import Router, setup, switchover, failover`; see docs/replica.md.",
    no_args_is_help=True,
)

T = TypeVar("T")


def _run(work: Callable[[], Awaitable[T]]) -> T:
    """Run one async step; a named error of sdlab.replica becomes a one-line error."""
    try:
        return asyncio.run(work())  # type: ignore[arg-type]  # a coroutine, at run time
    except ReplicaError as exc:
        stderr.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None


def _servers() -> Instances:
    servers = infra.kept(GROUP)
    if not servers:
        stderr.print("[red]error:[/] no replica cluster here; `sdlab replica up` starts one")
        raise typer.Exit(1)
    return servers


def _nodes(servers: Instances) -> dict[str, str]:
    """db1, db2, ... by port: the first primary has the lowest port, and names stay put
    when roles change."""
    return {f"db{i}": server.url for i, server in enumerate(servers, 1)}


@app.command()
def up(
    replicas: Annotated[int, typer.Option(min=0, max=8, help="How many replicas.")] = 1,
    semisync: Annotated[
        bool,
        typer.Option(
            "--semisync", help="Semi-synchronous: a commit waits for a replica to have it."
        ),
    ] = False,
) -> None:
    """Start a primary and N replicas as private servers, set up replication, verify it.

    Each replica is seeded from a consistent snapshot of the primary (mariadb-dump),
    replicates with MASTER_USE_GTID=slave_pos, and must read back a probe row written on
    the primary. The servers outlive the command until `sdlab replica down` (or
    `sdlab infra down`).

    Examples:

      sdlab replica up

      sdlab replica up --replicas 2 --semisync
    """
    if infra.kept(GROUP):
        stderr.print("[red]error:[/] a replica cluster is already up; `sdlab replica down` first")
        raise typer.Exit(1)
    with spinner(f"starting {1 + replicas} private MariaDB servers..."):
        servers = infra.mariadb(
            1 + replicas, options=setup.server_options(semisync=semisync), keep=GROUP
        )
    nodes = _nodes(servers)
    primary, *others = nodes
    try:
        with spinner("seeding the replicas and starting replication..."):
            _run(
                lambda: setup.build(
                    nodes[primary], {n: nodes[n] for n in others}, semisync=semisync
                )
            )
    except BaseException:
        infra.release(GROUP)
        raise
    _show(nodes)
    console.print(
        f"applications connect as {setup.APPLICATION.user}: "
        f"Router([{', '.join(repr(setup.app_url(url)) for url in nodes.values())}])",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Each node: its role, GTID position, lag (seconds and transactions), thread states.

    Roles are observed, not remembered: a replica is a node replicating from a source,
    the primary is the node the replicas replicate from.
    """
    _show(_nodes(_servers()), as_json=as_json)


@app.command()
def promote(
    node: Annotated[str, typer.Argument(help="The replica to make the primary (db2, ...).")],
) -> None:
    """Planned switchover: NODE becomes the primary with no committed write lost.

    The old primary is made read-only, NODE catches up to its last GTID, stops
    replicating and becomes writable, and every other node (the old primary too) then
    replicates from NODE.
    """
    nodes = _nodes(_servers())
    with spinner(f"switching over to {node}..."):
        _run(lambda: switchover(nodes, node))
    _show(nodes)


@app.command("failover")
def failover_command(
    force: Annotated[
        bool, typer.Option("--force", help="Even if the primary still answers.")
    ] = False,
) -> None:
    """The primary is dead: promote the most advanced replica, repoint the others.

    What no replica had received when the primary died is lost, unless the cluster runs
    semi-sync (`up --semisync`), where a commit is acknowledged only once a replica has it.
    """
    nodes = _nodes(_servers())
    with spinner("failing over..."):
        _run(lambda: failover(nodes, force=force))
    _show(nodes)


@app.command()
def kill(node: Annotated[str, typer.Argument(help="The node to crash (db1, ...).")]) -> None:
    """SIGKILL one node's server: a crash, to try `failover` on. `start` brings it back."""
    _server(node).kill()
    console.print(f"{node} killed")


@app.command()
def start(node: Annotated[str, typer.Argument(help="The node to start again (db1, ...).")]) -> None:
    """Start a stopped or killed node again, on its port and data."""
    _server(node).start()
    console.print(f"{node} started")


@app.command()
def down() -> None:
    """Stop the cluster's servers and remove their data."""
    stopped = infra.release(GROUP)
    console.print(f"stopped {len(stopped)} servers" if stopped else "no replica cluster was up")


@app.command()
def experiment(quick: lab.Quick = False, out: lab.ReportDir = None) -> None:
    """Replication lag by write rate, commit latency async vs semi-sync, read throughput
    with 0, 1 and 2 replicas, the cost of read-your-writes, and writes lost by failover.

    Examples:

      sdlab replica experiment --quick
    """
    lab.run_as_command(
        [cls.quick() if quick else cls() for cls in EXPERIMENTS], quick=quick, out=out
    )


def _server(node: str) -> Any:
    servers = _servers()
    names = _nodes(servers)
    if node not in names:
        stderr.print(f"[red]error:[/] no node called {node!r}; the nodes are {', '.join(names)}")
        raise typer.Exit(1)
    return servers[list(names).index(node)]


def _show(nodes: dict[str, str], *, as_json: bool = False) -> None:
    topology = _run(lambda: observe_all(nodes))
    rows = _rows(topology)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="sdlab replica cluster")
    for column in (
        "node",
        "address",
        "role",
        "GTID position",
        "lag (s)",
        "lag (trx)",
        "IO / SQL",
        "semi-sync",
    ):
        table.add_column(column, no_wrap=True)
    table.add_column("state", overflow="fold")
    for row in rows:
        table.add_row(
            row["node"],
            row["address"],
            row["role"],
            row["gtid_position"] or "-",
            _dash(row["lag_seconds"]),
            _dash(row["lag_transactions"]),
            f"{row['io_thread'] or '-'} / {row['sql_thread'] or '-'}",
            "on" if row["semisync"] else "off",
            _state(row),
        )
    console.print(table)


def _rows(topology: Topology) -> list[dict[str, Any]]:
    rows = []
    for n in topology:
        role = topology.role(n)
        rows.append(
            {
                "node": n.name,
                "address": n.address,
                "role": role,
                "gtid_position": n.slave_pos if role == "replica" else n.binlog_pos,
                "lag_seconds": n.seconds_behind,
                "lag_transactions": topology.lag(n),
                "io_thread": n.io_running or None,
                "sql_thread": n.sql_running or None,
                "io_state": n.io_state or None,
                "sql_state": n.sql_state or None,
                "source": n.source,
                "read_only": n.read_only,
                "semisync": n.semisync_source if role == "primary" else n.semisync_replica,
                "last_error": n.last_error or None,
                "error": n.error,
            }
        )
    return rows


def _state(row: dict[str, Any]) -> str:
    """A few words for the table (`--json` has the whole of it)."""
    if row["error"]:
        return "does not answer"
    if row["last_error"]:
        return str(row["last_error"])
    return str(row["sql_state"] or "").split(";")[0]


def _dash(value: object) -> str:
    return "-" if value is None else str(value)
