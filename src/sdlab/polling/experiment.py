"""Short polling against long polling: K clients watch one creation.

For each row a fresh server is created (TO_DO now, IN_PROGRESS after `to_do` seconds,
DONE after `in_progress` more) while K clients follow it, by short polling every I
seconds or by long polling, until they see DONE. Measured:

- requests: every request the clients made, from their first poll to DONE;
- detection delay: for each change and each client, from the change (the database's
  clock, in the row) to the client reading the answer that showed it or a newer one
  (the same clock: one machine);
- missed statuses: changes a client never saw because a newer one replaced it between
  two of its polls (3 per client are possible);
- server CPU: the CPU time of the service processes from the create to the last
  client's DONE, as each reports it (`time.process_time()` in `/stats`: to the
  microsecond, where the kernel's per-process ticks are 10 ms); for long polling, the
  service's memory per parked client (`psutil`).

The service is `sdlab polling serve` in a process of its own (MariaDB + Redis); the
clients run in up to `processes` other processes (`watchers.py`), so their work is not the
server's, though on two cores they compete with it for CPU. The last row splits the
largest crowd over two service processes on one database: the creation is made
through the first, and half the clients wake on the second through Redis.

Each long-polling crowd is also measured, in the same run and just before, against the
floor (`sdlab.bench.floor`): a bare uvloop server that holds the same clients' polls and,
on a trigger, writes one pre-encoded answer to every transport. Its three changes are
stamped as it is told of them, so its detection delay is the fan-out alone: the kernel's
loopback TCP and the clients' own work. sdlab's long-poll rows give their p50 and p99 as
ratios to the floor at the same K.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

import httpx
import psutil

from sdlab import sql
from sdlab.bench import Bench, Chart, Experiment, Headline, Latency, Outcome, Row, register
from sdlab.bench.floor import FloorProcess
from sdlab.polling.model import Delays
from sdlab.polling.service import ServiceProcess

STATUSES_PER_CREATION = 3  # TO_DO, IN_PROGRESS, DONE
TARGET_P99_MS = 20.0  # issue 4: long-poll detection p99 under 20 ms after the change
TARGET_RATIO = 2.0  # issue 22: long-poll detection p99 within 2x of the floor's


@dataclass(frozen=True)
class Watch:
    """One row: `clients` follow one creation by short polling every `interval` seconds
    (None: by long polling), served by `services` processes."""

    clients: int
    interval: float | None
    services: int = 1
    floor: bool = False
    """The floor server (sdlab.bench.floor) instead of the service."""

    @property
    def long(self) -> bool:
        return self.interval is None

    @property
    def label(self) -> str:
        how = "long" if self.interval is None else f"short every {self.interval:g} s"
        if self.floor:
            return f"K={self.clients:,} long, floor"
        processes = "" if self.services == 1 else f", {self.services} server processes"
        return f"K={self.clients:,} {how}{processes}"


@register
@dataclass
class ShortVsLong(Experiment):
    """K clients watch one mock EC2 creation (three status changes) by short polling at
    interval I and by long polling: requests, detection delay after each change, missed
    statuses, and the server process's CPU. The service and the clients are separate
    processes; MariaDB holds the state and Redis carries the announcements."""

    name = "polling"
    system = "polling"
    title = "Short vs long polling: K clients watch one creation"
    services = ("mysql", "redis")

    clients: tuple[int, ...] = (10, 100, 1000)
    intervals: tuple[float, ...] = (0.1, 1.0)
    waiters: int = 5000
    to_do: float = 1.0
    in_progress: float = 1.0
    processes: int = 4

    @classmethod
    def quick(cls) -> Self:
        return cls(clients=(50,), intervals=(0.25,), waiters=500, to_do=0.5, in_progress=0.5)

    def watches(self) -> list[Watch]:
        """The rows, in the order they are measured: each long-polling crowd right after
        the floor's at the same K."""
        rows = [
            watch
            for k in self.clients
            for watch in (
                *(Watch(k, interval) for interval in self.intervals),
                Watch(k, None, floor=True),
                Watch(k, None),
            )
        ]
        if self.waiters:
            rows += [
                Watch(self.waiters, None, floor=True),
                Watch(self.waiters, None),
                Watch(self.waiters, None, services=2),
            ]
        return rows

    async def run(self, bench: Bench) -> Outcome:
        watches = self.watches()
        mysql_url = bench.endpoint("mysql").url
        async with sql.scratch_database(mysql_url, prefix="sdlab_polling_exp") as db_url:
            rows = []
            with bench.progress("watching creations", total=len(watches)) as advance:
                for number, watch in enumerate(watches, 1):
                    if watch.floor:
                        rows.append(await self._floor(watch))
                    else:
                        rows.append(await self._measure(watch, f"server-{number}", db_url, bench))
                    advance()
        _ratios(rows, watches)
        return Outcome(
            rows,
            chart=Chart(
                x="polling",
                y=["detection p50 (ms)", "detection p99 (ms)"],
                ylabel="ms from the change to the client",
                logy=True,
            ),
            notes=self._notes(list(zip(watches, rows, strict=True))),
        )

    def headline(self, rows: list[Row]) -> Headline | None:
        crowds = [max(self.clients), *([self.waiters] if self.waiters else [])]
        labels = {Watch(k, None).label for k in crowds}
        ratios = [r["p99 / floor"] for r in rows if r["polling"] in labels]
        sizes = " and ".join(f"{k:,}" for k in sorted(set(crowds)))
        return Headline(
            f"long-poll detection p99 / the floor's, the worst of K = {sizes}",
            max(ratios),
            unit="x",
            target=TARGET_RATIO,
        )

    async def _measure(
        self, watch: Watch, server_id: str, db_url: str, bench: Bench
    ) -> dict[str, Any]:
        delays = Delays(self.to_do, self.in_progress)
        redis_url = bench.endpoint("redis").url
        count = len(self.watches())
        services = [
            ServiceProcess(db_url, redis_url=redis_url, servers=count, delays=delays)
            for _ in range(watch.services)
        ]
        try:
            for service in services:
                await asyncio.to_thread(service.start)
            return await self._watch(watch, server_id, services)
        finally:
            for service in services:
                await asyncio.to_thread(service.close)

    async def _watch(
        self, watch: Watch, server_id: str, services: list[ServiceProcess]
    ) -> dict[str, Any]:
        first = services[0]
        measured = [psutil.Process(s.pid) for s in services]
        async with httpx.AsyncClient(timeout=30) as http:
            before = (await http.get(f"{first.url}/short/status/{server_id}")).json()
            rss_before = sum(p.memory_info().rss for p in measured)
            shares = self._shares(watch, at_least=len(services))
            crowd = [
                await _start_watchers(
                    services[i % len(services)].url,
                    server_id,
                    share,
                    before["version"],
                    watch.interval,
                )
                for i, share in enumerate(shares)
            ]
            for process in crowd:
                await _expect(process, "ready")
            if watch.interval is None:
                for i, service in enumerate(services):
                    parked = sum(s for j, s in enumerate(shares) if j % len(services) == i)
                    await _until_waiting(http, service.url, parked)
            rss_parked = sum(p.memory_info().rss for p in measured)

            cpu_before = await _cpu(http, services)
            created = await http.post(f"{first.url}/create/{server_id}")
            created.raise_for_status()
            reports = [await _results(process) for process in crowd]
            cpu = await _cpu(http, services) - cpu_before
            woken = [(await http.get(f"{s.url}/stats")).json()["woken"] for s in services]
        long = watch.long
        return _row(
            watch,
            reports,
            before["version"],
            cpu=cpu,
            # the worst of the service processes (percentiles do not add up)
            answer_p99=max(w["p99 (ms)"] for w in woken) if long else None,
            memory=(rss_parked - rss_before) if long else None,
        )

    async def _floor(self, watch: Watch) -> dict[str, Any]:
        """The same crowd against the floor server: three changes, `to_do` and
        `in_progress` seconds apart, each written to every held poll in one pass."""
        async with FloorProcess.running("poll") as floor:
            measured = psutil.Process(floor.pid)
            rss_before = measured.memory_info().rss
            shares = self._shares(watch)
            crowd = [
                await _start_watchers(floor.url, "server-1", share, 0, None) for share in shares
            ]
            for process in crowd:
                await _expect(process, "ready")
            await floor.until_held(watch.clients)
            rss_parked = measured.memory_info().rss
            cpu_before = await floor.cpu()
            for version, (status, pause) in enumerate(
                [("TO_DO", self.to_do), ("IN_PROGRESS", self.in_progress), ("DONE", 0.0)], 1
            ):
                server = {
                    "server_id": "server-1",
                    "status": status,
                    "version": version,
                    "changed_at": datetime.now(UTC).isoformat(),
                }
                await floor.fire(json.dumps(server).encode())
                await asyncio.sleep(pause)
            reports = [await _results(process) for process in crowd]
            cpu = await floor.cpu() - cpu_before
        return _row(watch, reports, 0, cpu=cpu, memory=rss_parked - rss_before)

    def _shares(self, watch: Watch, *, at_least: int = 1) -> list[int]:
        """The crowd split over watcher processes (about 250 clients each, at most
        `processes`, and at least one per service process), as evenly as it divides."""
        processes = max(at_least, min(self.processes, math.ceil(watch.clients / 250)))
        return [
            watch.clients // processes + (i < watch.clients % processes) for i in range(processes)
        ]

    def _notes(self, measured: list[tuple[Watch, dict[str, Any]]]) -> list[str]:
        notes = [
            f"Each creation: TO_DO at once, IN_PROGRESS after {self.to_do:g} s, DONE after "
            f"{self.in_progress:g} s more. Short pollers start at random phases; long polls "
            "are held up to 30 s. Detection delay: from the change's database timestamp "
            "(taken before its COMMIT) to the client reading the answer that showed it "
            "(or, for a status it skipped, the newer one); server answer: from the same "
            "timestamp to the service handing the answer to uvicorn.",
        ]
        errors = sum(row["errors"] for _, row in measured)
        if errors:
            notes.append(f"{errors} requests failed (connection errors or unexpected statuses).")
        longs = [(w, row) for w, row in measured if w.long and w.services == 1 and not w.floor]
        met = [w.clients for w, row in longs if row["p99 / floor"] <= TARGET_RATIO]
        under = [w.clients for w, row in longs if row["detection p99 (ms)"] < TARGET_P99_MS]
        notes.append(
            f"Target: long-poll detection p99 within {TARGET_RATIO:g}x of the floor's at the "
            f"same K. Met at K = {', '.join(f'{k:,}' for k in met) or 'none'}. (Under "
            f"{TARGET_P99_MS:g} ms, the first target: K = "
            f"{', '.join(f'{k:,}' for k in under) or 'none'}.) The floor is a bare uvloop "
            "server writing one pre-encoded answer to every held poll in one pass, with the "
            "same client processes, measured just before; its delay is the loopback TCP and "
            "the clients' own work, which share the two cores with the server."
        )
        for watch, row in measured:
            if watch.long:
                notes.append(
                    f"{row['polling']}: server CPU {row['server CPU (s)']:.3f} s "
                    f"({1e6 * row['server CPU (s)'] / max(row['requests'], 1):.0f} us an "
                    f"answer), clients' CPU {row['client CPU (s)']:.3f} s "
                    f"({1e6 * row['client CPU (s)'] / max(row['requests'], 1):.0f} us an "
                    "answer)."
                )
        for watch, long in longs:
            for other, row in measured:
                if other.clients == watch.clients and not other.long and not other.floor:
                    cpu = row["server CPU (s)"] / max(long["server CPU (s)"], 1e-9)
                    notes.append(
                        f"{row['polling']}: {row['requests'] / long['requests']:.1f}x the "
                        f"requests of long polling, {cpu:.1f}x its server CPU, detection p50 "
                        f"{row['detection p50 (ms)']:.0f} ms against "
                        f"{long['detection p50 (ms)']:.1f} ms."
                    )
        return notes


def detection(results: list[dict[str, Any]], before: int) -> tuple[Latency, int]:
    """The detection delay of every change for every client, and how many changes the
    clients saw. A client that skipped a status (its next answer was already newer)
    learned of that change only with the newer answer: its delay counts from the
    skipped change to that answer, rather than being left out, which would flatter the
    percentiles exactly when clients fall behind. (The row's versions are all changes of
    its one server; a change no client saw has no known time and is left out.)"""
    changed_at = {v: changed for c in results for v, _, _, changed in c["seen"]}
    delays = Latency()
    seen = 0
    for client in results:
        last = before
        for version, _status, answered, changed in client["seen"]:
            for skipped in range(last + 1, version):
                if skipped in changed_at:
                    delays.record(int((answered - changed_at[skipped]) * 1e9))
            delays.record(int((answered - changed) * 1e9))
            seen += 1
            last = version
    return delays, seen


def _ratios(rows: list[dict[str, Any]], watches: list[Watch]) -> None:
    """Each long-polling row's p50 and p99 as ratios to the floor's at the same K."""
    floors = {w.clients: row for w, row in zip(watches, rows, strict=True) if w.floor}
    for watch, row in zip(watches, rows, strict=True):
        floor = floors.get(watch.clients)
        if watch.long and not watch.floor and floor is not None:
            for p in ("p50", "p99"):
                row[f"{p} / floor"] = row[f"detection {p} (ms)"] / floor[f"detection {p} (ms)"]


def _row(
    watch: Watch,
    reports: list[dict[str, Any]],
    since: int,
    *,
    cpu: float,
    memory: int | None,
    answer_p99: float | None = None,
) -> dict[str, Any]:
    """One table row from the watcher processes' reports: `since` is the version the
    clients started from, `memory` the server's RSS growth while they were parked."""
    results = [client for report in reports for client in report["clients"]]
    delays, seen = detection(results, since)
    requests = sum(c["requests"] for c in results)
    return {
        "polling": watch.label,
        "requests": requests,
        "requests per client": requests / watch.clients,
        "missed statuses": STATUSES_PER_CREATION * watch.clients - seen,
        "detection p50 (ms)": delays.percentile_ms(50),
        "detection p99 (ms)": delays.percentile_ms(99),
        "server answer p99 (ms)": answer_p99,
        "server CPU (s)": cpu,
        "client CPU (s)": sum(r["cpu (s)"] for r in reports),
        "server memory per client (KB)": None if memory is None else memory / watch.clients / 1024,
        "p50 / floor": None,
        "p99 / floor": None,
        "errors": sum(c["errors"] for c in results),
    }


async def _start_watchers(
    url: str, server_id: str, clients: int, since: int, interval: float | None
) -> asyncio.subprocess.Process:
    mode = ["--long"] if interval is None else ["--interval", str(interval)]
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sdlab.polling.watchers", url, server_id,
        "--clients", str(clients), "--since", str(since), *mode,
        stdout=asyncio.subprocess.PIPE,
        limit=1 << 26,  # the results are one JSON line: about 80 bytes per client
    )  # fmt: skip


async def _expect(process: asyncio.subprocess.Process, line: str) -> None:
    assert process.stdout is not None
    got = (await process.stdout.readline()).decode().strip()
    if got != line:
        raise RuntimeError(f"watcher process said {got!r}, expected {line!r}")


async def _results(process: asyncio.subprocess.Process) -> dict[str, Any]:
    """What a watcher process found: {"cpu (s)": ..., "clients": [...]}."""
    assert process.stdout is not None
    line = await process.stdout.readline()
    await process.wait()
    if process.returncode != 0 or not line:
        raise RuntimeError(f"a watcher process failed (exit {process.returncode})")
    report: dict[str, Any] = json.loads(line)
    return report


async def _until_waiting(http: httpx.AsyncClient, url: str, count: int) -> None:
    """Until the service holds `count` long polls (RuntimeError after two minutes)."""
    async with asyncio.timeout(120):
        while (held := (await http.get(f"{url}/stats")).json()["waiting"]) < count:  # noqa: ASYNC110 - another process's state
            await asyncio.sleep(0.02)
    if held > count:
        raise RuntimeError(f"{url} holds {held} long polls; expected {count}")


async def _cpu(http: httpx.AsyncClient, services: list[ServiceProcess]) -> float:
    """CPU seconds the service processes have used, by their own clocks."""
    return sum([(await http.get(f"{s.url}/stats")).json()["cpu (s)"] for s in services])


ALL = [ShortVsLong]
