"""The load balancer's experiments: the seed's load test, and the benchmark against HAProxy.

The load test (`lb`) is the seed's: four HTTP backends that answer after 200-500 ms, 100
requests at once through the balancer, here once per strategy. Each request comes from
its own loopback address (127.0.0.2, 127.0.0.3, ...: Linux routes all of 127/8 to `lo`), so
the hashing strategies see 100 clients, not one. Last, round robin again with one backend
SIGKILLed just before: the seed's balancer panicked there; this one marks it down at the
first refused connect and sends the client elsewhere.

The benchmark (`lb-bench`) runs wrk against a fast tiny backend (the demo backend with no
delay: four ports in one process) with keep-alive and with `Connection: close` (a new
connection per request), straight to the backend, through `sdlab lb serve` and through
HAProxy in tcp mode with the same backends, round robin and checks on. Each proxy's CPU
time comes from /proc (psutil) around each run. Rounds alternate the targets so that the
machine's noise falls on all of them; the table has each one's median.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Self

import port_for
import psutil

from sdlab.bench import (
    Bench,
    Chart,
    Experiment,
    Headline,
    Latency,
    Outcome,
    Row,
    published,
    register,
)
from sdlab.infra.haproxy import HAProxy
from sdlab.infra.process import ServerProcess, sdlab_command
from sdlab.lb.strategies import STRATEGIES

CLOSE = "Connection: close"


def backend_process(port: int, *, count: int = 1, delay: str = "0.2-0.5") -> ServerProcess:
    """`sdlab lb backends` in a process of its own, ready once its last port accepts."""
    command = sdlab_command(
        "lb", "backends", "--count", str(count), "--port", str(port), "--delay", delay
    )
    return ServerProcess(command, ready_port=port + count - 1, name=f"demo backends :{port}")


def balancer_process(
    port: int,
    backends: list[str],
    *,
    strategy: str = "round-robin",
    admin_port: int = 0,
    workers: int = 1,
    extra: tuple[str, ...] = (),
) -> ServerProcess:
    """`sdlab lb serve` in a process of its own, ready once its port accepts."""
    command = sdlab_command(
        "lb", "serve", "--port", str(port), "--strategy", strategy,
        "--admin-port", str(admin_port), "--workers", str(workers),
        *(arg for address in backends for arg in ("--backend", address)), *extra,
    )  # fmt: skip
    return ServerProcess(command, ready_port=port, name=f"sdlab lb ({strategy})")


def free_ports(count: int) -> list[int]:
    """`count` consecutive free ports (the demo backends take consecutive ones)."""
    while True:
        first = int(port_for.select_random())
        ports = list(range(first, first + count))
        if all(port_for.is_available(p) for p in ports[1:]) and ports[-1] < 65536:
            return ports


async def get(port: int, client: str) -> tuple[str | None, float]:
    """One `GET /` with `Connection: close` from the address `client`: (the answering
    backend's port, or None if the request failed; seconds)."""
    start = perf_counter()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(client, 0))
        writer.write(b"GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
        data = await reader.read()
        writer.close()
    except OSError:
        return None, perf_counter() - start
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200") or not body.startswith(b"backend "):
        return None, perf_counter() - start
    return body.split()[1].decode(), perf_counter() - start


@register
@dataclass
class LoadTest(Experiment):
    """The seed's load test: 100 requests at once through the balancer to four backends
    that answer after 200-500 ms, for each of the seven strategies (each request from its
    own loopback address), then round robin with one backend SIGKILLed just before. Time
    for all, latency, failures, and how many requests each backend answered."""

    name = "lb"
    system = "lb"
    title = "Load balancer: 100 parallel requests over 4 slow backends, per strategy"

    requests: int = 100
    backends: int = 4
    delay: str = "0.2-0.5"

    @classmethod
    def quick(cls) -> Self:
        return cls()

    async def run(self, bench: Bench) -> Outcome:
        ports = free_ports(self.backends)
        addresses = [f"127.0.0.1:{p}" for p in ports]
        rows = []
        runs = [(s, False) for s in STRATEGIES] + [("round-robin", True)]
        with ExitStack() as stack, bench.progress("strategies", total=len(runs)) as advance:
            servers = [backend_process(p, delay=self.delay) for p in ports]
            balancers = [
                balancer_process(int(port_for.select_random()), addresses, strategy=strategy)
                for strategy, _ in runs
            ]
            for process in [*servers, *balancers]:
                stack.callback(process.close)
            # Started all at once: each is a Python process that takes a second or two.
            await asyncio.gather(*(asyncio.to_thread(p.start) for p in [*servers, *balancers]))
            for (strategy, kill_one), balancer in zip(runs, balancers, strict=True):
                if kill_one:
                    await asyncio.to_thread(servers[-1].kill)
                port = int(balancer.command[balancer.command.index("--port") + 1])
                rows.append(await self._load(strategy, port, ports, killed=kill_one))
                balancer.close()
                advance()
        return Outcome(
            rows,
            chart=Chart(
                "strategy",
                [f"backend {i}" for i in range(1, self.backends + 1)],
                ylabel="requests answered",
            ),
            published=published("load-balancer"),
            notes=[
                "Hashing strategies (source-hash, ring, maglev) send each client address to "
                "one backend: 100 clients do not split evenly, as 100 draws would not.",
                "The killed-backend row: its connects are refused, the balancer marks it "
                "down at the first one and retries the client on another backend.",
            ],
        )

    async def _load(
        self, strategy: str, port: int, ports: list[int], *, killed: bool
    ) -> dict[str, Any]:
        clients = [f"127.0.{1 + i // 250}.{2 + i % 250}" for i in range(self.requests)]
        start = perf_counter()
        answers = await asyncio.gather(*(get(port, client) for client in clients))
        elapsed = perf_counter() - start
        latency = Latency()
        for _, seconds in answers:
            latency.record(int(seconds * 1e9))
        counts = Counter(backend for backend, _ in answers)
        summary = latency.summary(percentiles=(50, 99))
        row: dict[str, Any] = {
            "strategy": strategy + (", backend 4 killed" if killed else ""),
            "requests": self.requests,
            "failed": counts.pop(None, 0),
            "time (ms)": round(elapsed * 1000, 1),
            "p50 (ms)": summary["p50 (ms)"],
            "p99 (ms)": summary["p99 (ms)"],
        }
        for i, backend_port in enumerate(ports, 1):
            row[f"backend {i}"] = counts.get(str(backend_port), 0)
        return row


@dataclass(frozen=True)
class Run:
    target: str
    mode: str
    requests_per_s: float
    p99_ms: float
    cpu_us: float | None


WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
WRK_P99 = re.compile(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
WRK_TOTAL = re.compile(r"(\d+) requests in")


@register
@dataclass
class Benchmark(Experiment):
    """wrk against a fast tiny backend (four ports, one process), with keep-alive and with
    a new connection per request: straight to the backend, through sdlab.lb and through
    HAProxy (tcp mode, the same four backends, round robin, checks on, `threads` threads
    against sdlab.lb's `workers` processes). Requests/s, p99 and each proxy's CPU per
    request (from /proc), as ratios to HAProxy; medians of `rounds` alternating rounds."""

    name = "lb-bench"
    system = "lb"
    title = "Load balancer: sdlab.lb against HAProxy under wrk"

    seconds: float = 10.0
    connections: int = 50
    rounds: int = 3
    workers: int = 1
    threads: int = 1

    @classmethod
    def quick(cls) -> Self:
        return cls(seconds=3.0, rounds=1)

    async def run(self, bench: Bench) -> Outcome:
        ports = free_ports(4)
        addresses = [f"127.0.0.1:{p}" for p in ports]
        lb_port, haproxy_port = int(port_for.select_random()), int(port_for.select_random())
        runs: list[Run] = []
        modes = ["keep-alive", "new connection"]
        total = self.rounds * len(modes) * 3
        with ExitStack() as stack, bench.progress("wrk runs", total=total) as advance:
            stack.enter_context(backend_process(ports[0], count=4, delay="0"))
            ours = stack.enter_context(balancer_process(lb_port, addresses, workers=self.workers))
            theirs = stack.enter_context(HAProxy(haproxy_port, addresses, threads=self.threads))
            targets = [("direct", ports[0], None), ("sdlab.lb", lb_port, ours.pid)]
            targets.append(("HAProxy", haproxy_port, theirs.pid))
            await asyncio.sleep(1)  # the first checks pass on both
            for _ in range(self.rounds):
                for mode in modes:
                    for target, port, pid in targets:
                        runs.append(await asyncio.to_thread(self._wrk, target, mode, port, pid))
                        advance()
        rows = self._rows(runs, modes, [t for t, _, _ in targets])
        return Outcome(
            rows,
            chart=Chart("run", ["requests/s"], ylabel="requests/s (wrk)"),
            notes=self._notes(rows),
        )

    def _wrk(self, target: str, mode: str, port: int, pid: int | None) -> Run:
        command = [
            "wrk", "-t1", f"-c{self.connections}", f"-d{self.seconds:g}s", "--latency",
            *(["-H", CLOSE] if mode == "new connection" else []),
            f"http://127.0.0.1:{port}/",
        ]  # fmt: skip
        with _cpu_seconds(pid) as used:
            done = subprocess.run(command, capture_output=True, text=True, check=True)
        rps, p99, total = WRK_RPS.search(done.stdout), WRK_P99.search(done.stdout), None
        total = WRK_TOTAL.search(done.stdout)
        if rps is None or p99 is None or total is None:
            raise RuntimeError(f"cannot read wrk's output:\n{done.stdout}\n{done.stderr}")
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
        requests = int(total.group(1))
        cpu = used() * 1e6 / requests if pid is not None and requests else None
        return Run(target, mode, float(rps.group(1)), float(p99.group(1)) * scale, cpu)

    def _rows(self, runs: list[Run], modes: list[str], targets: list[str]) -> list[dict[str, Any]]:
        rows = []
        for mode in modes:
            medians = {}
            for target in targets:
                mine = [r for r in runs if r.target == target and r.mode == mode]
                cpus = [r.cpu_us for r in mine if r.cpu_us is not None]
                medians[target] = (
                    statistics.median(r.requests_per_s for r in mine),
                    statistics.median(r.p99_ms for r in mine),
                    statistics.median(cpus) if cpus else None,
                )
            ref_rps, _, ref_cpu = medians["HAProxy"]
            for target in targets:
                rps, p99, cpu = medians[target]
                rows.append(
                    {
                        "run": f"{mode}, {target}",
                        "requests/s": round(rps),
                        "p99 (ms)": round(p99, 2),
                        "proxy CPU per request (us)": round(cpu, 1) if cpu else "-",
                        "throughput vs HAProxy": f"{rps / ref_rps:.2f}x",
                        "CPU vs HAProxy": f"{cpu / ref_cpu:.2f}x" if cpu and ref_cpu else "-",
                    }
                )
        return rows

    def _notes(self, rows: list[dict[str, Any]]) -> list[str]:
        targets = {"keep-alive": 0.95, "new connection": 0.9}
        notes = []
        for row in rows:
            mode, _, target = row["run"].partition(", ")
            if target != "sdlab.lb":
                continue
            ratio = float(row["throughput vs HAProxy"].rstrip("x"))
            cpu = row["CPU vs HAProxy"]
            met = ratio >= targets[mode] and cpu != "-" and float(cpu.rstrip("x")) <= 1.2
            notes.append(
                f"{mode}: {ratio:.2f}x HAProxy's throughput (target {targets[mode]}x), CPU "
                f"{cpu} (target 1.2x): {'met' if met else 'not met'}"
            )
        notes.append(
            f"sdlab.lb: {self.workers} worker process(es); HAProxy: {self.threads} thread(s); "
            f"wrk: 1 thread, {self.connections} connections, {self.seconds:g} s a run."
        )
        return notes

    def headline(self, rows: list[Row]) -> Headline | None:
        """The hard case: a new connection for every request."""
        ours = next(r for r in rows if r["run"] == "new connection, sdlab.lb")
        peer = next(r for r in rows if r["run"] == "new connection, HAProxy")
        return Headline(
            "sdlab.lb / HAProxy requests/s, a new connection per request",
            ours["requests/s"] / peer["requests/s"],
            unit="x",
            target=0.9,
            better="higher",
        )


@contextmanager
def _cpu_seconds(pid: int | None) -> Iterator[Any]:
    """CPU seconds (user + system) that a process and its children used in the block."""

    def total() -> float:
        if pid is None:
            return 0.0
        process = psutil.Process(pid)
        seconds = 0.0
        for each in [process, *process.children(recursive=True)]:
            times = each.cpu_times()
            seconds += times.user + times.system
        return seconds

    before = total()
    result: list[float] = []
    yield lambda: result[0]
    result.append(total() - before)
