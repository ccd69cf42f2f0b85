"""What group commit buys: `redis-benchmark -t set,get` at 50 clients against our RESP
server on each database, with group commit and without, and against real Redis.

Every server is a real process: `sdlab kv serve --no-http` on a fresh table (a temporary
SQLite file, a scratch MariaDB or PostgreSQL database), and a private
`redis-server` (no persistence) as the ceiling. redis-benchmark is the stock tool, run
as a user would, on random keys among `keyspace`. "Naive" is the same server with
`--naive`: one transaction, one statement, per write.
"""

from __future__ import annotations

import asyncio
import csv
import io
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from sdlab import infra
from sdlab.bench import Bench, Chart, Experiment, Headline, Outcome, Row, register
from sdlab.kv.process import ServerProcess
from sdlab.sql import scratch_database


def redis_benchmark(
    port: int, *, requests: int, clients: int, keyspace: int, pipeline: int = 1
) -> dict[str, dict[str, float]]:
    """Run redis-benchmark's SET and GET tests; per test: requests/s and latencies (ms)."""
    program = shutil.which("redis-benchmark")
    if program is None:
        raise RuntimeError("redis-benchmark is not installed (`sdlab infra up --install`)")
    done = subprocess.run(
        [
            program, "-h", "127.0.0.1", "-p", str(port), "-t", "set,get",
            "-n", str(requests), "-c", str(clients), "-r", str(keyspace),
            "-P", str(pipeline), "-d", "16", "--csv",
        ],
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    found = {}
    for row in csv.DictReader(io.StringIO(done.stdout)):
        found[row["test"]] = {
            "rps": float(row["rps"]),
            "p50": float(row["p50_latency_ms"]),
            "p99": float(row["p99_latency_ms"]),
        }
    return found


@register
@dataclass
class Throughput(Experiment):
    """SET and GET requests per second at 50 clients (redis-benchmark): our Redis-protocol
    server on SQLite, MariaDB and PostgreSQL with group commit and with one transaction
    per write, and a real Redis as the ceiling."""

    name = "kv-throughput"
    system = "kv"
    title = "Key-value store: group commit vs one transaction per write (redis-benchmark)"
    services = ("mysql", "postgres")
    requests: int = 20_000
    naive_requests: int = 5_000
    clients: int = 50
    keyspace: int = 10_000

    @classmethod
    def quick(cls) -> Self:
        return cls(requests=4_000, naive_requests=1_500)

    async def run(self, bench: Bench) -> Outcome:
        mysql_url = bench.endpoint("mysql").url
        postgres_url = bench.endpoint("postgres").url
        rows: list[dict[str, Any]] = []
        targets = ["redis", *(f"{db}:{mode}" for db in ("sqlite", "mysql", "postgres")
                              for mode in ("group", "naive"))]  # fmt: skip
        with bench.progress("redis-benchmark", total=len(targets)) as advance:
            for target in targets:
                if target == "redis":
                    rows.append(await asyncio.to_thread(self._measure_redis))
                else:
                    db, mode = target.split(":")
                    async with _empty_table(db, mysql_url, postgres_url) as url:
                        rows.append(await asyncio.to_thread(self._measure, db, mode, url))
                advance()
        notes = []
        for db in ("SQLite", "MariaDB", "PostgreSQL"):
            group = next(r for r in rows if r["server"] == f"sdlab kv on {db}, group commit")
            naive = next(r for r in rows if r["server"] == f"sdlab kv on {db}, naive")
            ratio = group["SET (req/s)"] / naive["SET (req/s)"]
            notes.append(
                f"{db}: group commit writes {ratio:.1f}x as fast as one transaction per write "
                f"(target: at least 3x); mean batch {group['mean batch']} writes."
            )
        redis_row = rows[0]
        best = max(r["SET (req/s)"] for r in rows[1:])
        notes.append(
            f"Real Redis (memory only, no fsync) is the ceiling: {redis_row['SET (req/s)']:,.0f} "
            f"SET/s, {redis_row['SET (req/s)'] / best:.1f}x our best."
        )
        notes.append(
            f"{self.clients} clients, random keys among {self.keyspace:,}, 16-byte values; "
            f"{self.requests:,} requests per test ({self.naive_requests:,} for the naive "
            "servers). The benchmark and the servers share this machine's two cores."
        )
        return Outcome(
            rows,
            chart=Chart(
                "server",
                ["SET (req/s)", "GET (req/s)"],
                ylabel="requests/s (log scale: Redis is 10x to 100x the rest)",
                logy=True,
            ),
            notes=notes,
        )

    def headline(self, rows: list[Row]) -> Headline | None:
        ratios = {}
        for db in ("SQLite", "MariaDB", "PostgreSQL"):
            group = next(r for r in rows if r["server"] == f"sdlab kv on {db}, group commit")
            naive = next(r for r in rows if r["server"] == f"sdlab kv on {db}, naive")
            ratios[db] = group["SET (req/s)"] / naive["SET (req/s)"]
        worst = min(ratios, key=lambda db: ratios[db])
        return Headline(
            f"group commit / naive SET/s, worst engine ({worst})",
            ratios[worst],
            unit="x",
            target=3,
            better="higher",
        )

    def _measure_redis(self) -> dict[str, Any]:
        with infra.redis(1) as (server,):
            result = redis_benchmark(
                server.port, requests=self.requests, clients=self.clients, keyspace=self.keyspace
            )
        return _row("Redis 7 (the ceiling)", result, {})

    def _measure(self, db: str, mode: str, url: str) -> dict[str, Any]:
        naive = mode == "naive"
        with ServerProcess(url, naive=naive, http=False) as server:
            result = redis_benchmark(
                server.resp_port,
                requests=self.naive_requests if naive else self.requests,
                clients=self.clients,
                keyspace=self.keyspace,
            )
            stats = _kv_stats(server.resp_port)
        title = {"sqlite": "SQLite", "mysql": "MariaDB", "postgres": "PostgreSQL"}[db]
        return _row(f"sdlab kv on {title}, {'naive' if naive else 'group commit'}", result, stats)


def _row(server: str, result: dict[str, dict[str, float]], stats: dict[str, str]) -> dict[str, Any]:
    writes, batches = int(stats.get("writes", 0)), int(stats.get("batches", 0))
    return {
        "server": server,
        "SET (req/s)": round(result["SET"]["rps"]),
        "SET p50 (ms)": result["SET"]["p50"],
        "SET p99 (ms)": result["SET"]["p99"],
        "GET (req/s)": round(result["GET"]["rps"]),
        "GET p50 (ms)": result["GET"]["p50"],
        "mean batch": round(writes / batches, 1) if batches else "",
    }


def _kv_stats(port: int) -> dict[str, str]:
    import redis

    client = redis.Redis(port=port, protocol=2)
    try:
        return {k: str(v) for k, v in client.info("kv").items()}
    finally:
        client.close()


@asynccontextmanager
async def _empty_table(db: str, mysql_url: str, postgres_url: str) -> AsyncIterator[str]:
    """A backend URL of an empty place for the table (a temporary SQLite file, a scratch
    database), removed afterwards."""
    if db == "sqlite":
        with tempfile.TemporaryDirectory(prefix="sdlab-kv-") as tmp:
            yield f"sqlite:///{Path(tmp) / 'kv.sqlite3'}"
        return
    server = mysql_url if db == "mysql" else postgres_url
    async with scratch_database(server, prefix="sdlab_kv_bench") as url:
        yield url
