"""`sdlab kv`: serve the key-value store over HTTP and the Redis protocol; measure it."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

try:
    import uvloop
except ImportError:  # pragma: no cover - optional speed-up
    uvloop = None  # type: ignore[assignment]  # optional: asyncio's loop then

from sdlab import frontend, lab
from sdlab.config import settings
from sdlab.console import console
from sdlab.kv.core import DEFAULT_MAX_VALUE, KVError
from sdlab.kv.server import OUTPUT_LIMIT
from sdlab.kv.service import check_exposure
from sdlab.kv.service import serve as serve_store
from sdlab.kv.store import Store

app = typer.Typer(
    help="A key-value store on a relational database (sdlab.kv), speaking HTTP and the "
    "Redis protocol, with group commit.\n\nThe library is `from sdlab.kv import Store`; "
    "see docs/kv.md.",
    no_args_is_help=True,
)


DEFAULT_PORT = 6380  # the Redis protocol; Redis itself is on 6379
DEFAULT_HTTP_PORT = 8080
DATABASE = "sdlab_kv"


def default_backend() -> str:
    return f"sqlite:///{settings().state_dir / 'kv' / 'kv.sqlite3'}"


def db_url(db: str | None) -> str:
    """The URL `--db` means: `sqlite` (the default file), `mysql` or `postgres` (the
    server sdlab finds: database sdlab_kv on MariaDB, postgres on PostgreSQL, which kv
    does not create), or a URL as given."""
    if db is None or db == "sqlite":
        return default_backend()
    if db.lower() in frontend.SHORTHANDS:
        return frontend.database_url(db, DATABASE, postgres_database="postgres")
    return db


@app.command(cls=frontend.respelled({"--backend": "--db", "--resp-port": "--port"}))
def serve(
    db: Annotated[
        str | None,
        frontend.db_option(
            "Where the table lives: sqlite (the default file), mysql, postgres (the "
            "server sdlab finds), or a URL: sqlite:///FILE, sqlite:// (memory), "
            "mysql://USER@HOST:PORT/DB, postgresql://USER@HOST:PORT/DB; add ?table=NAME "
            "for another table than kv_store. Default: <SDLAB_STATE_DIR>/kv/kv.sqlite3.",
            metavar="sqlite|mysql|postgres|URL",
        ),
    ] = None,
    host: Annotated[str, frontend.host_option()] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option("--port", min=0, max=65535, help="Redis-protocol port (0: any free one)."),
    ] = DEFAULT_PORT,
    http_port: Annotated[
        int, typer.Option(min=0, max=65535, help="HTTP API port (0: any free one).")
    ] = DEFAULT_HTTP_PORT,
    http: Annotated[bool, typer.Option(help="Serve HTTP.")] = True,
    resp: Annotated[bool, typer.Option(help="Serve the Redis protocol.")] = True,
    naive: Annotated[
        bool,
        typer.Option(
            "--naive", help="One transaction per write, no group commit (for comparison)."
        ),
    ] = False,
    max_value: Annotated[
        int, typer.Option(min=1, help="Longest value accepted, in bytes.")
    ] = DEFAULT_MAX_VALUE,
    sweep_interval: Annotated[
        float, typer.Option(min=0, help="Seconds between sweeps of expired rows (0: never).")
    ] = 1.0,
    pool_size: Annotated[
        int, typer.Option(min=1, help="Connections to MariaDB or PostgreSQL.")
    ] = 10,
    requirepass: Annotated[
        str | None,
        typer.Option(
            envvar="SDLAB_KV_PASSWORD",
            show_default=False,
            help="The password clients must give (AUTH over RESP, a bearer token over "
            "HTTP). Prefer the environment variable: an option shows in `ps`.",
        ),
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure", help="Listen beyond loopback with no password (protected mode off)."
        ),
    ] = False,
    max_output: Annotated[
        int,
        typer.Option(
            min=1, help="Unread reply bytes a RESP client may hold before it is disconnected."
        ),
    ] = OUTPUT_LIMIT,
) -> None:
    """Serve one store over HTTP and the Redis protocol until Ctrl-C (or SIGTERM).

    redis-cli, redis-py and redis-benchmark work against the Redis port unchanged:
    Redis 7's string and keyspace commands, MULTI/EXEC/WATCH, databases 0 to 15, AUTH
    (docs/kv.md lists them). A write is answered once its transaction has committed.
    Without --requirepass it listens on loopback only, unless --insecure.

    Examples:

      sdlab kv serve

      sdlab kv serve --db mysql --port 6380

      sdlab kv serve --db postgresql://postgres@127.0.0.1:5432/postgres?table=kv_pg

      SDLAB_KV_PASSWORD=s3cret sdlab kv serve --host 0.0.0.0

      redis-cli -p 6380 set greeting hello EX 60

      curl -X PUT --data-binary hello 'localhost:8080/keys/greeting?ttl=60'
    """
    try:
        url = db_url(db)
        check_exposure(host, requirepass, insecure)
        store = Store(
            url,
            group_commit=not naive,
            max_value=max_value,
            sweep_interval=sweep_interval,
            pool_size=pool_size,
        )
    except (KVError, ValueError) as exc:
        frontend.fail(exc, system="kv")

    def ready(ports: dict[str, int]) -> None:
        where = []
        if "http" in ports:
            where.append(f"HTTP on http://{host}:{ports['http']}")
        if "resp" in ports:
            where.append(f"Redis protocol on redis://{host}:{ports['resp']}")
        mode = "one transaction per write" if naive else "group commit"
        mode += ", password required" if requirepass else ""
        console.print(f"kv ({store.backend.name}, {mode}): {', '.join(where)}", highlight=False)

    serving = serve_store(
        store,
        host=host,
        http_port=http_port if http else None,
        resp_port=port if resp else None,
        ready=ready,
        password=requirepass,
        insecure=insecure,
        output_limit=max_output,
    )
    try:
        if uvloop is not None:  # a faster event loop: the server is CPU-bound under load
            uvloop.run(serving)
        else:
            asyncio.run(serving)
    except (KVError, OSError) as exc:
        frontend.fail(exc, system="kv")


@app.command()
def experiment(
    quick: lab.Quick = False,
    out: lab.ReportDir = None,
) -> None:
    """redis-benchmark -t set,get at 50 clients, unpipelined and -P 16, against our
    server on SQLite, MariaDB and PostgreSQL, with group commit and without (one
    transaction per write), and against two private Redis servers: one with appendfsync
    always (the durable peer, with our ratios to it) and one in memory (the ceiling).

    Examples:

      sdlab kv experiment --quick

      sdlab kv experiment --out /tmp/kv-report
    """
    from sdlab.kv.experiment import Throughput

    chosen = Throughput.quick() if quick else Throughput()
    lab.run_as_command([chosen], quick=quick, out=out)


lab.renamed(app, "bench", experiment, system="kv")
