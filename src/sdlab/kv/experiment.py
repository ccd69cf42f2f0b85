"""What group commit and batched reads buy: `redis-benchmark -t set,get` at 50 clients,
one request at a time and pipelined 16 deep (`-P 16`), against our RESP server on each
database, with group commit and without, and against real Redis twice: in memory (the
ceiling) and with `appendonly yes` and `appendfsync always` (every write on disk before
its reply: the fair peer for a store whose writes commit before they are answered).

Every server is a real process: `sdlab kv serve --no-http` on a fresh table (a temporary
SQLite file, a scratch MariaDB or PostgreSQL database), and private `redis-server`s.
redis-benchmark is the stock tool, run as a user would, on random keys among `keyspace`.
"Naive" is the same server with `--naive`: one transaction, one statement, per write.
Each row says how durable its commits are (SQLite's `synchronous`, InnoDB's
`innodb_flush_log_at_trx_commit`, PostgreSQL's `synchronous_commit`).
"""

from __future__ import annotations

import asyncio
import csv
import io
import math
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
from sdlab.kv.service import ServerProcess
from sdlab.sql import connect, scratch_database

PIPELINES = (1, 16)
TITLES = {"sqlite": "SQLite", "mysql": "MariaDB", "postgres": "PostgreSQL"}
DURABLE_REDIS = "Redis 7, appendfsync always"


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
    """SET and GET requests per second at 50 clients (redis-benchmark, unpipelined and
    -P 16): our Redis-protocol server on SQLite, MariaDB and PostgreSQL with group commit
    and with one transaction per write, a durable Redis (appendfsync always) as the fair
    peer, and an in-memory Redis as the ceiling."""

    name = "kv-throughput"
    system = "kv"
    title = "Key-value store: group commit and batched reads vs Redis (redis-benchmark)"
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
        targets = ["redis", "redis:durable", *(f"{db}:{mode}" for db in TITLES
                                                for mode in ("group", "naive"))]  # fmt: skip
        with bench.progress("redis-benchmark", total=len(targets)) as advance:
            for target in targets:
                if target.startswith("redis"):
                    durable = target == "redis:durable"
                    rows.append(await asyncio.to_thread(self._measure_redis, durable))
                else:
                    db, mode = target.split(":")
                    async with _empty_table(db, mysql_url, postgres_url) as url:
                        durability = await _durability(db, url)
                        row = await asyncio.to_thread(self._measure, db, mode, url)
                        rows.append({"server": row.pop("server"), "durability": durability, **row})
                advance()
        peer = next(r for r in rows if r["server"] == DURABLE_REDIS)
        for row in rows:
            for test in ("SET", "GET"):
                ratio = _ratio(row[f"{test} (req/s)"], peer[f"{test} (req/s)"])
                row[f"{test} vs durable Redis"] = f"{ratio:.2f}x"
        return Outcome(
            rows,
            chart=Chart(
                "server",
                ["SET (req/s)", "GET (req/s)"],
                ylabel="requests/s (log scale: Redis is 10x to 100x the rest)",
                logy=True,
            ),
            notes=self._notes(rows, peer),
        )

    def headline(self, rows: list[Row]) -> Headline | None:
        ratios = {}
        for db in TITLES.values():
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

    def _notes(self, rows: list[dict[str, Any]], peer: dict[str, Any]) -> list[str]:
        notes = []
        for title in TITLES.values():
            group = next(r for r in rows if r["server"] == f"sdlab kv on {title}, group commit")
            naive = next(r for r in rows if r["server"] == f"sdlab kv on {title}, naive")
            ratio = _ratio(group["SET (req/s)"], naive["SET (req/s)"])
            set_vs = _ratio(group["SET (req/s)"], peer["SET (req/s)"])
            reads = ", ".join(
                f"{_ratio(group[f'GET{p} (req/s)'], group[f'SET{p} (req/s)']):.2f}x {label}"
                for p, label in (("", "unpipelined"), (" -P16", "with -P 16"))
            )
            notes.append(
                f"{title}: group commit writes {ratio:.1f}x as fast as one transaction per "
                f"write (target: at least 3x), {set_vs:.2f}x the durable Redis (target: "
                f"at least 0.5x); GET over group-commit SET: {reads} (target: at least 1x); "
                f"mean write batch {group['mean batch']}."
            )
        ceiling = next(r for r in rows if r["server"].startswith("Redis 7 (the ceiling"))
        best = max(r["SET (req/s)"] for r in rows if r["server"].startswith("sdlab"))
        notes.append(
            f"Redis in memory (no fsync) is the ceiling: {ceiling['SET (req/s)']:,.0f} SET/s, "
            f"{_ratio(ceiling['SET (req/s)'], best):.1f}x our best; with appendfsync always it "
            f"writes {peer['SET (req/s)']:,.0f} SET/s."
        )
        notes.append(
            f"{self.clients} clients, random keys among {self.keyspace:,}, 16-byte values; "
            f"{self.requests:,} requests per test ({self.naive_requests:,} for the naive "
            "servers), unpipelined and -P 16. The benchmark and the servers share this "
            "machine's two cores."
        )
        return notes

    def _measure_redis(self, durable: bool) -> dict[str, Any]:
        options = {"appendonly": "yes", "appendfsync": "always"} if durable else {}
        with infra.redis(1, options=options) as (server,):
            results = [
                redis_benchmark(
                    server.port, requests=self.requests, clients=self.clients,
                    keyspace=self.keyspace, pipeline=pipeline,
                )
                for pipeline in PIPELINES
            ]  # fmt: skip
        title = DURABLE_REDIS if durable else "Redis 7 (the ceiling, no fsync)"
        durability = "appendfsync always" if durable else "memory only"
        return {"server": title, "durability": durability, **_row(results, {})}

    def _measure(self, db: str, mode: str, url: str) -> dict[str, Any]:
        naive = mode == "naive"
        with ServerProcess(url, naive=naive, http=False) as server:
            results = [
                redis_benchmark(
                    server.resp_port,
                    requests=self.naive_requests if naive else self.requests,
                    clients=self.clients,
                    keyspace=self.keyspace,
                    pipeline=pipeline,
                )
                for pipeline in PIPELINES
            ]
            stats = _kv_stats(server.resp_port)
        title = f"sdlab kv on {TITLES[db]}, {'naive' if naive else 'group commit'}"
        return {"server": title, **_row(results, stats)}


def _row(results: list[dict[str, dict[str, float]]], stats: dict[str, str]) -> dict[str, Any]:
    one, piped = results
    writes, batches = int(stats.get("writes", 0)), int(stats.get("batches", 0))
    return {
        "SET (req/s)": _rate(one["SET"]["rps"]),
        "SET p50 (ms)": one["SET"]["p50"],
        "SET p99 (ms)": one["SET"]["p99"],
        "GET (req/s)": _rate(one["GET"]["rps"]),
        "GET p50 (ms)": one["GET"]["p50"],
        "SET -P16 (req/s)": _rate(piped["SET"]["rps"]),
        "GET -P16 (req/s)": _rate(piped["GET"]["rps"]),
        "mean batch": round(writes / batches, 1) if batches else "",
    }


def _rate(rps: float) -> int:
    """A rate as redis-benchmark gave it; 0 where a run was too short for its clock
    (it says inf)."""
    return round(rps) if math.isfinite(rps) else 0


def _ratio(ours: float, theirs: float) -> float:
    return ours / theirs if theirs else math.nan


async def _durability(db: str, url: str) -> str:
    """How durable a commit is on this backend, as the database says it."""
    if db == "sqlite":
        return "synchronous=FULL (WAL)"  # what backends.SQLiteBackend sets
    session = await connect(url)
    try:
        if db == "mysql":
            value = await session.fetchval("SELECT @@innodb_flush_log_at_trx_commit")
            return f"innodb_flush_log_at_trx_commit={value}"
        return f"synchronous_commit={await session.fetchval('SHOW synchronous_commit')}"
    finally:
        await session.close()


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
