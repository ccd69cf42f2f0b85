"""`sdlab lb`: serve the load balancer, run the seed's demo backends, benchmark it
against HAProxy, run the seed's load test."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from sdlab import lab
from sdlab.console import console, stderr
from sdlab.lb.backends import LBError
from sdlab.lb.config import Config, ConfigError, load
from sdlab.lb.demo import SEED_DELAY, parse_delay, serve_backends
from sdlab.lb.strategies import STRATEGIES

app = typer.Typer(
    help="A TCP load balancer (sdlab.lb): seven strategies, health checks, draining, the "
    "PROXY protocol and an admin API, on asyncio and uvloop.\n\nThe library is "
    "`from sdlab.lb import Balancer, load_config`; see docs/lb.md.",
    no_args_is_help=True,
)

DEFAULT_PORT = 9090  # the seed's
DEFAULT_ADMIN_PORT = 9091
DEFAULT_BACKEND_PORT = 8081  # the seed's :8081-8084


def _strategy(value: str | None) -> str | None:
    if value is not None and value not in STRATEGIES:
        raise typer.BadParameter(f"known: {', '.join(STRATEGIES)}")
    return value


@app.command()
def serve(
    config_file: Annotated[
        Path | None,
        typer.Option("--config", metavar="FILE", help="A TOML file (see docs/lb.md)."),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[
        int | None, typer.Option(min=0, max=65535, help=f"Port (default {DEFAULT_PORT}).")
    ] = None,
    backend: Annotated[
        list[str] | None,
        typer.Option(
            "--backend", metavar="HOST:PORT", help="A backend (repeat; replaces the file's)."
        ),
    ] = None,
    strategy: Annotated[
        str | None,
        typer.Option(callback=_strategy, help=f"One of: {', '.join(STRATEGIES)}."),
    ] = None,
    admin_port: Annotated[
        int | None,
        typer.Option(
            min=0, max=65535, help=f"Admin API port (default {DEFAULT_ADMIN_PORT}; 0: none)."
        ),
    ] = None,
    check: Annotated[
        str | None, typer.Option(help="Active health check: tcp (default), http, none.")
    ] = None,
    send_proxy: Annotated[
        int | None,
        typer.Option(min=1, max=2, help="Send the PROXY protocol header, version 1 or 2."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="Processes sharing the port (SO_REUSEPORT); default 1."),
    ] = None,
) -> None:
    """Balance TCP connections over the backends until Ctrl-C (or SIGTERM), then drain:
    stop accepting, let open connections finish (up to drain_timeout), exit.

    Examples:

      sdlab lb backends --count 4 --port 8081 &

      sdlab lb serve --port 9090 --backend 127.0.0.1:8081 --backend 127.0.0.1:8082

      sdlab lb serve --config lb.toml --strategy maglev

      curl localhost:9090/; curl localhost:9091/backends
    """
    listen: dict[str, Any] = {}
    for key, value in (
        ("host", host),
        ("port", port),
        ("strategy", strategy),
        ("send_proxy", send_proxy),
        ("workers", workers),
    ):
        if value is not None:
            listen[key] = value
    overrides: dict[str, Any] = {"listen": listen}
    if admin_port is not None:
        overrides["admin"] = {"port": admin_port, "enabled": admin_port != 0}
    if check is not None:
        overrides["health"] = {"check": check}
    if backend:
        overrides["backend"] = [{"address": address} for address in backend]
    try:
        config = load(config_file, overrides)
    except ConfigError as exc:
        stderr.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    if not config.backend:
        stderr.print("[red]error:[/] no backends: give --backend HOST:PORT or a [[backend]]")
        raise typer.Exit(2)
    worker = _fork_workers(config.listen.workers)
    try:
        _run_loop(_serve(config, worker=worker))
    except (OSError, LBError) as exc:
        stderr.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None


def _fork_workers(count: int) -> int:
    """With `count` > 1, fork count-1 more processes (before any event loop exists); each
    serves the same port through SO_REUSEPORT with its own pool and checks. Returns this
    process's number: 0 in the first, which alone serves the admin API."""
    for number in range(1, count):
        if os.fork() == 0:
            # Die with the first worker, even if it is SIGKILLed.
            PR_SET_PDEATHSIG = 1
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
            return number
    return 0


async def _serve(config: Config, *, worker: int) -> None:
    from sdlab.lb.balancer import Balancer

    balancer = Balancer(config)
    await balancer.start(reuse_port=config.listen.workers > 1)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    admin = None
    if config.admin.enabled and worker == 0:
        admin = await _start_admin(balancer, config)
    if worker == 0:
        where = f", admin http://{config.admin.host}:{config.admin.port}" if admin else ""
        console.print(
            f"balancing {config.listen.host}:{balancer.port} over {len(balancer.pool)} "
            f"backends ({config.listen.strategy}, {config.health.check} checks, "
            f"{config.listen.workers} worker(s)){where}; Ctrl-C to drain and stop",
            highlight=False,
        )
    await stop.wait()
    closing: list[Awaitable[Any]] = [balancer.close()]
    if admin is not None:
        server, serving = admin
        server.should_exit = True
        closing.append(serving)  # let uvicorn finish its own shutdown, not be cancelled
    cut, *_ = await asyncio.gather(*closing)
    if worker == 0:
        console.print(f"stopped; {cut} connection(s) cut at the drain deadline", highlight=False)


async def _start_admin(balancer: Any, config: Config) -> tuple[Any, asyncio.Task[None]]:
    """uvicorn serving the admin API in this loop, once it listens."""
    import uvicorn

    from sdlab.lb.service import create_app

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # the balancer handles Ctrl-C: it drains first

    server = Server(
        uvicorn.Config(
            create_app(balancer),
            host=config.admin.host,
            port=config.admin.port,
            log_level="warning",
            access_log=False,
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise OSError(f"the admin API could not listen on port {config.admin.port}")
        await asyncio.sleep(0.01)
    return server, task


@app.command()
def backends(
    count: Annotated[int, typer.Option(min=1, max=1000, help="How many backends.")] = 4,
    port: Annotated[
        int, typer.Option(min=1, max=65535, help="The first one's port; the others follow.")
    ] = DEFAULT_BACKEND_PORT,
    delay: Annotated[
        str,
        typer.Option(
            help="Seconds before each answer: SECONDS or LOW-HIGH (uniform); 0 for the "
            "benchmark's fast backend."
        ),
    ] = f"{SEED_DELAY[0]:g}-{SEED_DELAY[1]:g}",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    proxy_protocol: Annotated[
        bool,
        typer.Option("--proxy-protocol", help="Expect a PROXY protocol header (v1 or v2)."),
    ] = False,
) -> None:
    """Serve the seed's demo backends on ports PORT to PORT+COUNT-1 until Ctrl-C.

    Each answers any GET with `backend PORT` after DELAY (GET /client: the client's
    address, from the PROXY header with --proxy-protocol).

    Examples:

      sdlab lb backends --count 4 --port 8081

      sdlab lb backends --count 4 --port 8181 --delay 0
    """
    try:
        chosen = parse_delay(delay)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--delay") from None

    async def run() -> None:
        await serve_backends(
            port, count=count, delay=chosen, host=host, proxy_protocol=proxy_protocol
        )
        last = port + count - 1
        console.print(
            f"demo backends on {host}:{port}-{last}, answering after {delay} s; Ctrl-C to stop",
            highlight=False,
        )
        await asyncio.Event().wait()

    try:
        _run_loop(run())
    except OSError as exc:
        stderr.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass


@app.command()
def bench(
    quick: lab.Quick = False,
    out: lab.ReportDir = None,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="sdlab.lb worker processes (SO_REUSEPORT).")
    ] = 1,
    threads: Annotated[int, typer.Option(min=1, max=64, help="HAProxy's nbthread.")] = 1,
) -> None:
    """wrk against a fast backend: direct, through sdlab.lb, through HAProxy (tcp mode,
    same backends, round robin, checks on), with keep-alive and with a new connection
    per request. Requests/s, p99, and each proxy's CPU per request, as ratios to HAProxy.

    Examples:

      sdlab lb bench --quick

      sdlab lb bench --workers 2 --threads 2 --out /tmp/lb-report
    """
    from sdlab.lb.experiment import Benchmark

    size = Benchmark.quick() if quick else Benchmark()
    size.workers, size.threads = workers, threads
    lab.run_as_command([size], quick=quick, out=out)


@app.command()
def experiment(quick: lab.Quick = False, out: lab.ReportDir = None) -> None:
    """The seed's load test: 100 parallel requests over four backends that answer after
    200-500 ms, for every strategy: time, latency and requests per backend, beside the
    seed's round robin; then round robin with one backend killed.

    Examples:

      sdlab lb experiment --quick

      sdlab lb experiment --out /tmp/lb-report
    """
    from sdlab.lb.experiment import LoadTest

    lab.run_as_command([LoadTest.quick() if quick else LoadTest()], quick=quick, out=out)


def _run_loop(main: Any) -> None:
    """On uvloop: the proxy is CPU-bound under load."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)
