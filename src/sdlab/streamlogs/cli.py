"""`sdlab streamlogs`: serve deployment logs over Server-Sent Events, and measure it."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Annotated

import typer

from sdlab import frontend, lab
from sdlab.config import settings
from sdlab.console import console, stderr

DEFAULT_PORT = 8010  # each service its own default (docs/infra.md)

app = typer.Typer(
    help="Log streaming over Server-Sent Events (sdlab.streamlogs): mock deployments "
    "write logs, browsers and `curl -N` follow them live, resuming after a reconnect.\n\n"
    "The library is `from sdlab.streamlogs import create_app, Hub, DeploymentStore`; "
    "see docs/streamlogs.md.",
    no_args_is_help=True,
)


@app.command(cls=frontend.respelled({"--original": "--seed"}))
def serve(
    host: Annotated[str, frontend.host_option()] = "127.0.0.1",
    port: Annotated[int, frontend.port_option()] = DEFAULT_PORT,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where deployments and their logs live (default: <SDLAB_STATE_DIR>/streamlogs)."
        ),
    ] = None,
    retry_ms: Annotated[
        int, typer.Option(min=0, help="Reconnection delay told to clients (SSE `retry:`).")
    ] = 1000,
    keepalive: Annotated[
        float,
        typer.Option(
            min=0.01,
            help="Heartbeat period (s): a stream that sent nothing for a whole period sends "
            "a keepalive comment, so after one to two periods of silence.",
        ),
    ] = 15.0,
    send_timeout: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="Seconds a client may leave a full send buffer untouched before it is cut "
            "(it resumes by reconnecting with its Last-Event-ID).",
        ),
    ] = 30.0,
    max_running: Annotated[
        int,
        typer.Option(min=1, help="Mock deployments running at once, at most; past it POST is 429."),
    ] = 100,
    max_log_size: Annotated[
        int,
        typer.Option(
            min=1,
            help="Bytes a mock deployment's log may hold: the line that would pass it is "
            "not written, and the deployment ends failed, saying why.",
        ),
    ] = 64 * 1024 * 1024,
    keep: Annotated[
        int,
        typer.Option(
            min=0,
            help="Ended deployments kept (the newest); older ones are deleted when a "
            "deployment starts and when the server starts.",
        ),
    ] = 1000,
    allow_origin: Annotated[
        list[str] | None,
        typer.Option(
            help="An origin (e.g. https://ops.example.com) whose pages may read the logs "
            "and the API (CORS), for an EventSource on another site; repeat for more. "
            "Writes stay same-origin.",
            show_default="none: same origin only",
        ),
    ] = None,
    seed_design: Annotated[
        bool,
        typer.Option(
            "--seed",
            help="Serve the seed's design instead (GET /logs/{id} only: a sync generator "
            "per client on the thread pool), to compare.",
        ),
    ] = False,
) -> None:
    """Serve the deployments page, the mock deployments and their live logs until Ctrl-C.

    Logs are files under --data-dir: they survive restarts, and a deployment that
    was running when the server stopped carries on when it starts again.

    Examples (then open http://127.0.0.1:8010/ in a browser):

      sdlab streamlogs serve --data-dir /tmp/deployments

      curl -X POST 'localhost:8010/deployments?lines=20&interval=0.2'

      curl -N localhost:8010/logs/ID

      curl -N -H 'Last-Event-ID: 118' localhost:8010/logs/ID

    The last one resumes after byte 118 of the log, as a browser does when it
    reconnects.
    """
    from uvicorn.config import STARTUP_FAILURE

    from sdlab.streamlogs.original import service as seed
    from sdlab.streamlogs.service import create_app, server

    folder = data_dir or settings().state_dir / "streamlogs"
    if folder.exists() and not folder.is_dir():
        stderr.print(f"[red]error:[/] --data-dir {folder} is not a directory", highlight=False)
        raise typer.Exit(1)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        stderr.print(
            f"[red]error:[/] cannot use --data-dir {folder}: {exc.strerror}", highlight=False
        )
        raise typer.Exit(1) from None
    if seed_design:
        web = seed.create_app(folder)
    else:
        web = create_app(
            folder,
            retry_ms=retry_ms,
            keepalive=keepalive,
            max_running=max_running,
            max_log_size=max_log_size,
            keep=keep,
            allow_origins=allow_origin or (),
        )
    running = server(web, host=host, port=port, send_timeout=send_timeout)
    running.on_start = lambda: console.print(
        f"serving {folder} on http://{host}:{port}/ (Ctrl-C to stop)", highlight=False
    )
    # Everything imported so far lives as long as the process: out of the collector's
    # sight, a full collection walks only what the connections made. (It paused the
    # server ~100 ms with 1,000 clients, which is the benchmark's p99 otherwise.)
    gc.collect()
    gc.freeze()
    try:
        running.run()
    except SystemExit as exc:
        if exc.code != STARTUP_FAILURE:
            raise
        raise typer.Exit(1) from None  # uvicorn could not start, and logged why in one line


@app.command()
def experiment(
    quick: lab.Quick = False,
    out: lab.ReportDir = None,
) -> None:
    """Fresh-line latency with 100 to 1,000 clients on one deployment, and with clients
    waiting on a quiet deployment: this service beside the seed's design, each in a
    server process of its own, the clients in another.

    Examples:

      sdlab streamlogs experiment --quick

      sdlab streamlogs experiment --out /tmp/report
    """
    from sdlab.streamlogs import experiment

    chosen = [cls.quick() if quick else cls() for cls in experiment.ALL]
    lab.run_as_command(chosen, quick=quick, out=out)


lab.renamed(app, "bench", experiment, system="streamlogs")
