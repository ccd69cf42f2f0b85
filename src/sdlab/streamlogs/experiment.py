"""Fresh-line latency with many clients on one deployment: this service beside the seed's
design (a sync generator per client on the thread pool, `original.py`), same run.

Three processes per measurement, so that each side's numbers are its own:

- the server: `sdlab streamlogs serve` (or `--seed`), alone in its process, started
  fresh for every design and client count;
- the clients: `python -m sdlab.streamlogs.loadgen`, N raw-socket SSE clients on one
  event loop (see loadgen.py for why not httpx), all on one deployment;
- this process: it appends the lines to the deployment's log, each stamped with
  CLOCK_MONOTONIC just before the write, and samples the server's memory and CPU.

A line's latency is the time from its write to its arrival at a client, for every client
and every line.

Each client count is also measured, in the same run and just before sdlab, against the
floor (`sdlab.bench.floor`): a bare uvloop server that answers the same load generator's
GETs with SSE headers and, told of a line, writes one pre-encoded event to every stream
in one pass. The line is stamped just before the floor is told, so its latency is the
fan-out alone (a pipe to the floor's process, the loopback TCP, the clients' own work);
sdlab's p50 and p99 are given as ratios to it.

A line some client has not received when the run stops (`drain` seconds after the last
write) counts as late by the time it had waited: those percentiles are lower bounds,
and the table says how many lines were still missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import port_for
import psutil

from sdlab.bench import Bench, Chart, Experiment, Headline, Latency, Outcome, Row, register
from sdlab.bench.floor import FloorProcess
from sdlab.infra.process import ServerProcess, sdlab_command
from sdlab.streamlogs.store import DeploymentStore

PAD = "x" * 60  # a benchmark line is about as long as a mock deployment's line


@dataclass(frozen=True)
class Measured:
    latency: Latency
    missing_percent: float
    """Of the (client, line) pairs, those not delivered when the run stopped."""
    kib_per_client: float
    cpu_percent: float
    client_cpu_percent: float
    """The load generator's, to show that it keeps up (its arrival stamps count its own
    delays against the server)."""
    failed: list[str]


@dataclass(frozen=True)
class Design:
    label: str
    flags: tuple[str, ...]


ORIGINAL = Design("seed", ("--seed",))  # the seed's design, rebuilt (streamlogs/original/)
SDLAB = Design("sdlab", ())
FLOOR = Design("floor", ())  # sdlab.bench.floor, not a streamlogs server
TARGET_RATIO = 2.0  # issue 22: sdlab's fresh-line p99 within 2x of the floor's


@dataclass
class Followers(Experiment):
    """The common part: start a server, connect clients, write lines, collect."""

    lines: int = 40
    interval: float = 0.25
    drain: float = 10.0

    async def measure(self, design: Design, clients: int, *, idle: int = 0) -> Measured:
        """One fresh server; `idle` clients watching a deployment that prints nothing,
        then `clients` clients on a deployment that prints `lines` lines."""
        if design is FLOOR:
            return await self.measure_floor(clients)
        folder = Path(tempfile.mkdtemp(prefix="sdlab-streamlogs-"))
        try:
            store = DeploymentStore(folder / "data")
            quiet, busy = store.create(), store.create()
            async with AsyncExitStack() as stack:
                port, process = await stack.enter_async_context(_server(design, store.root))
                baseline = process.memory_info().rss
                if idle:
                    watchers = await stack.enter_async_context(_clients(port, quiet.id, idle, 0))
                    await _message(watchers)
                loadgen = await stack.enter_async_context(
                    _clients(port, busy.id, clients, self.lines)
                )
                ready = await _message(loadgen)
                clients_process = psutil.Process(loadgen.pid)
                cpu_before, started = process.cpu_times(), time.monotonic()
                client_cpu_before = clients_process.cpu_times()
                written = await self._write(busy.log_path)
                rss = process.memory_info().rss
                result = await self._collect(loadgen)
                cpu_after, ended = process.cpu_times(), time.monotonic()
                client_cpu_after = clients_process.cpu_times()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return self._measured(
            result, written, clients, idle, rss - baseline,
            _busy(cpu_before, cpu_after), _busy(client_cpu_before, client_cpu_after),
            ended - started, ready["failed"],
        )  # fmt: skip

    async def measure_floor(self, clients: int) -> Measured:
        """The same load generator against the floor server: each line, stamped as for
        sdlab, is one SSE event written to every stream in one pass."""
        async with AsyncExitStack() as stack:
            floor = await stack.enter_async_context(FloorProcess.running("sse"))
            process = psutil.Process(floor.pid)
            baseline = process.memory_info().rss
            loadgen = await stack.enter_async_context(
                _clients(floor.port, "floor", clients, self.lines)
            )
            ready = await _message(loadgen)
            await floor.until_held(clients - len(ready["failed"]))
            clients_process = psutil.Process(loadgen.pid)
            cpu_before, started = process.cpu_times(), time.monotonic()
            client_cpu_before = clients_process.cpu_times()
            written = []
            for seq in range(self.lines):
                await asyncio.sleep(self.interval)
                stamp = time.monotonic_ns()
                await floor.fire(f"bench {seq} {stamp} {PAD}".encode())
                written.append(stamp)
            rss = process.memory_info().rss
            result = await self._collect(loadgen)
            cpu_after, ended = process.cpu_times(), time.monotonic()
            client_cpu_after = clients_process.cpu_times()
        return self._measured(
            result, written, clients, 0, rss - baseline,
            _busy(cpu_before, cpu_after), _busy(client_cpu_before, client_cpu_after),
            ended - started, ready["failed"],
        )  # fmt: skip

    def _measured(
        self,
        result: dict[str, Any],
        written: list[int],
        clients: int,
        idle: int,
        grown: int,
        cpu: float,
        client_cpu: float,
        elapsed: float,
        failed: list[str],
    ) -> Measured:
        latency = Latency.decode(result["latency"])
        missing = 0
        for seq, stamp in enumerate(written):
            late = clients - result["received"].get(str(seq), 0)
            if late > 0:  # not delivered: late by the time it waited, at least
                latency.record(result["stopped_ns"] - stamp, late)
                missing += late
        return Measured(
            latency=latency,
            missing_percent=100 * missing / (clients * self.lines),
            kib_per_client=max(grown, 0) / (clients + idle) / 1024,
            cpu_percent=100 * cpu / elapsed,
            client_cpu_percent=100 * client_cpu / elapsed,
            failed=failed,
        )

    async def _write(self, log_path: Path) -> list[int]:
        """Append the lines, one every `interval`; return each one's write time."""
        stamps = []
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND)
        try:
            for seq in range(self.lines):
                await asyncio.sleep(self.interval)
                stamp = time.monotonic_ns()
                os.write(fd, f"bench {seq} {stamp} {PAD}\n".encode())
                stamps.append(stamp)
        finally:
            os.close(fd)
        return stamps

    async def _collect(self, loadgen: asyncio.subprocess.Process) -> dict[str, Any]:
        """The clients' findings, once all have every line or `drain` has passed."""
        assert loadgen.stdin is not None
        try:
            return await asyncio.wait_for(_message(loadgen), self.drain)
        except TimeoutError:
            loadgen.stdin.write(b"stop\n")
            await loadgen.stdin.drain()
            return await asyncio.wait_for(_message(loadgen), 60)


@register
@dataclass
class FreshLineLatency(Followers):
    """N clients follow one deployment's log while a line is appended every `interval`
    seconds: the time from each write to its arrival at each client, for the seed's
    design (a thread-pool thread per waiting client, polling the file) and for sdlab's
    (one reader per deployment, asyncio fan-out). Each server runs alone in its own
    process, the clients in another; memory per client is the server's RSS growth."""

    name = "streamlogs"
    system = "streamlogs"
    title = "Fresh-line latency: a thread per client vs one reader and an asyncio fan-out"
    clients: tuple[int, ...] = (100, 300, 1000, 5000)
    seed_clients: int = 1000
    """The seed's design is measured up to this many clients only (a thread per client:
    beyond, a run would be its backlog draining)."""

    @classmethod
    def quick(cls) -> FreshLineLatency:
        return cls(clients=(100, 1000), lines=10, drain=3.0)

    async def run(self, bench: Bench) -> Outcome:
        rows, load = [], os.getloadavg()[0]
        designs = {
            count: [
                *([ORIGINAL] if count <= self.seed_clients else []),
                FLOOR,
                SDLAB,
            ]
            for count in self.clients
        }
        total = sum(len(d) for d in designs.values())
        with bench.progress("servers measured", total=total) as advance:
            for count in self.clients:
                found = {}
                for design in designs[count]:
                    found[design.label] = await self.measure(design, count)
                    advance()
                rows.append(_row(count, found))
        sdlab, floor = found["sdlab"], found["floor"]
        met = [r["clients"] for r in rows if r["sdlab p99 / floor"] <= TARGET_RATIO]
        notes = [
            f"{self.lines} lines, one every {self.interval} s, once every client had its "
            f"response headers; a run stops {self.drain} s after the last write. Servers "
            f"and clients share this 2-core machine (load average {load:.1f} at the start).",
            "Missing: (client, line) pairs not delivered by then. They count as late by "
            "the time they had waited, so with lines missing the percentiles are lower "
            "bounds.",
            "floor: a bare uvloop server (sdlab.bench.floor) holding the same load "
            "generator's streams and writing each line as one pre-encoded event to every "
            "stream in one pass, measured just before sdlab at the same client count; "
            "sdlab p50 / p99 are given as ratios to it. Target: sdlab p99 within "
            f"{TARGET_RATIO:g}x of the floor's. Met at "
            f"{', '.join(f'{k:,}' for k in met) or 'none'} clients.",
            f"A client stamps a line's arrival when its process reads it, so the clients' "
            f"own delays count against the server: with {count:,} clients their process "
            f"used {sdlab.client_cpu_percent:.1f}% of a core on sdlab, the server "
            f"{sdlab.cpu_percent:.1f}%; on the floor {floor.client_cpu_percent:.1f}% and "
            f"{floor.cpu_percent:.1f}%.",
            f"The seed's design is measured up to {self.seed_clients:,} clients.",
            "Measured earlier on this machine, on a busier day (2026-11): the seed's design "
            "at p50 388 ms / p99 5.2 s with 100 clients, p50 12 s with 300.",
            "seed: the seed's design, run here (a thread per waiting client); the seed "
            "published no figures for it.",
        ]
        chart = Chart(
            "clients",
            ["seed p99 (ms)", "sdlab p99 (ms)", "floor p99 (ms)", "sdlab p50 (ms)"],
            kind="line",
            ylabel="fresh-line latency (ms)",
            logy=True,
        )
        return Outcome(rows, chart=chart, notes=notes)

    def headline(self, rows: list[Row]) -> Headline | None:
        most = max(rows, key=lambda r: r["clients"])
        return Headline(
            f"sdlab fresh-line p99 / the floor's, {most['clients']:,} clients "
            f"({most['sdlab p99 (ms)']:.0f} ms / {most['floor p99 (ms)']:.0f} ms)",
            most["sdlab p99 / floor"],
            unit="x",
            target=TARGET_RATIO,
        )


@register
@dataclass
class QuietWatchers(Followers):
    """The failure the seed's design hides until production: clients of a deployment
    that prints nothing (finished, or between steps) each hold a thread-pool thread
    while they wait. With as many of them as threads (40), the clients of a busy
    deployment get nothing at all. sdlab's clients wait on an event, not a thread."""

    name = "streamlogs-quiet"
    system = "streamlogs"
    title = "Clients waiting on a quiet deployment, beside 100 on a busy one"
    idle: tuple[int, ...] = (0, 20, 40)
    clients: int = 100

    @classmethod
    def quick(cls) -> QuietWatchers:
        return cls(idle=(0, 40), lines=8, drain=3.0)

    async def run(self, bench: Bench) -> Outcome:
        rows, load = [], os.getloadavg()[0]
        with bench.progress("servers measured", total=2 * len(self.idle)) as advance:
            for idle in self.idle:
                row: dict[str, Any] = {"quiet clients": idle, "busy clients": self.clients}
                for design in (ORIGINAL, SDLAB):
                    found = await self.measure(design, self.clients, idle=idle)
                    row[f"{design.label} p50 (ms)"] = found.latency.percentile_ms(50)
                    row[f"{design.label} p99 (ms)"] = found.latency.percentile_ms(99)
                    row[f"{design.label} missing (%)"] = found.missing_percent
                    advance()
                rows.append(row)
        notes = [
            f"{self.lines} lines to the busy deployment, one every {self.interval} s; a run "
            f"stops {self.drain} s after the last write, and lines not delivered by then "
            f"count as late by the time they had waited (lower bounds). Load average "
            f"{load:.1f} at the start.",
            "anyio's thread pool, which Starlette runs sync iterators on, has 40 threads.",
            "seed: the seed's design, run here; the seed published no figures for it.",
        ]
        chart = Chart(
            "quiet clients",
            ["seed missing (%)", "sdlab missing (%)"],
            ylabel="% of the busy deployment's lines never delivered",
        )
        return Outcome(rows, chart=chart, notes=notes)

    def headline(self, rows: list[Row]) -> Headline | None:
        most = max(rows, key=lambda r: r["quiet clients"])
        return Headline(
            f"sdlab: busy lines lost beside {most['quiet clients']} quiet clients "
            f"(seed's design: {most['seed missing (%)']:.0f}%)",
            most["sdlab missing (%)"],
            unit="%",
            target=0,
        )


ALL: list[type[Followers]] = [FreshLineLatency, QuietWatchers]


def _row(clients: int, found: dict[str, Measured]) -> dict[str, Any]:
    """One client count: seed (if measured), floor and sdlab side by side."""
    labels = ("seed", "floor", "sdlab")
    row: dict[str, Any] = {"clients": clients}
    for label in labels:
        for p in (50, 99):
            row[f"{label} p{p} (ms)"] = (
                found[label].latency.percentile_ms(p) if label in found else None
            )
    for p in (50, 99):
        row[f"sdlab p{p} / floor"] = row[f"sdlab p{p} (ms)"] / max(row[f"floor p{p} (ms)"], 1e-9)
    row["p99 seed / sdlab"] = (
        row["seed p99 (ms)"] / max(row["sdlab p99 (ms)"], 1e-9) if "seed" in found else None
    )
    for label in labels:
        row[f"{label} KiB per client"] = found[label].kib_per_client if label in found else None
    for label in labels:
        row[f"{label} server CPU (%)"] = found[label].cpu_percent if label in found else None
    for label in ("floor", "sdlab"):
        row[f"{label} client CPU (%)"] = found[label].client_cpu_percent
    for label in labels:
        row[f"{label} missing (%)"] = found[label].missing_percent if label in found else None
    return row


def _busy(before: Any, after: Any) -> float:
    """CPU seconds between two psutil `cpu_times()`."""
    return float((after.user + after.system) - (before.user + before.system))


async def _message(process: asyncio.subprocess.Process) -> dict[str, Any]:
    assert process.stdout is not None
    line = await process.stdout.readline()
    if not line:
        raise RuntimeError(f"the load generator exited (code {await process.wait()})")
    message: dict[str, Any] = json.loads(line)
    return message


@asynccontextmanager
async def _server(design: Design, data_dir: Path) -> AsyncIterator[tuple[int, psutil.Process]]:
    """`sdlab streamlogs serve` in a process of its own, until the block ends."""
    port = int(port_for.select_random())
    server = ServerProcess(
        sdlab_command(
            "streamlogs", "serve", *design.flags, "--port", str(port), "--data-dir", str(data_dir)
        ),
        ready_url=f"http://127.0.0.1:{port}/openapi.json",
        name=f"streamlogs server ({design.label})",
    )
    await asyncio.to_thread(server.start)
    try:
        yield port, psutil.Process(server.pid)
    finally:
        server.kill()  # the seed's design never ends its streams: no grace to wait for
        server.close()


@asynccontextmanager
async def _clients(
    port: int, deployment: str, clients: int, lines: int
) -> AsyncIterator[asyncio.subprocess.Process]:
    """The load generator in a process of its own (see loadgen.py)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sdlab.streamlogs.loadgen",
        "127.0.0.1", str(port), f"/logs/{deployment}",
        "--clients", str(clients), "--lines", str(lines),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
