"""The pool experiments, small, on real servers: what they report must be physically true."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.progress import Progress

from sdlab.bench import Bench
from sdlab.infra.pytest_plugin import Endpoints, Servers
from sdlab.infra.service import Endpoint
from sdlab.pool.experiment import AcquireRelease, PoolPeers, PoolVersusNoPool
from tests.helpers import sdlab


def bench(**endpoints: Endpoint) -> Bench:
    return Bench(endpoints, Progress())


async def test_no_pool_runs_into_max_connections_and_the_pool_never_does(
    servers: Servers,
) -> None:
    (server,) = servers.mariadb(options={"max-connections": 20})
    experiment = PoolVersusNoPool(tasks=(10, 60), size=5, sequential=5)
    outcome = await experiment.run(bench(mysql=Endpoint("mysql", server.url, "managed")))

    few, many = outcome.rows
    assert few["no pool: failed tasks"] == "none"
    assert few["no pool (ms)"] >= 10
    assert many["no pool (ms)"] is None  # no time where tasks failed, as in the seed
    # root may take one connection past max_connections; the rest of the 60 are refused
    assert many["no pool: failed tasks"].endswith("Too many connections (1040)")
    failed = int(many["no pool: failed tasks"].split(" of ")[0])
    assert 60 - 21 - 3 <= failed <= 60 - 20  # a few may connect after others closed
    for row in outcome.rows:
        # Five connections, each busy 10 ms a task: no honest pool beats N x 10 ms / 5.
        assert row["floor (ms)"] == row["N"] * 10 / 5
        assert row["pool / floor"] >= 1.0
        assert row["seed: pool of 10 (ms)"] in (46.59, None)
    assert "max_connections is 20" in outcome.notes[2]
    assert outcome.published is not None
    assert outcome.published.key == "connection-pool"


async def test_every_peer_keeps_to_its_pool_size(sdlab_endpoints: Endpoints) -> None:
    endpoints = {name: sdlab_endpoints[name] for name in ("mysql", "postgres")}
    outcome = await PoolPeers(tasks=(40,), size=4).run(bench(**endpoints))

    assert [row["pool"] for row in outcome.rows] == [
        "asyncio.Queue, bare (MariaDB)",
        "sdlab.pool (MariaDB)",
        "asyncmy.create_pool (MariaDB)",
        "SQLAlchemy QueuePool (MariaDB)",
        "sdlab.pool (PostgreSQL)",
        "psycopg_pool (PostgreSQL)",
    ]
    for row in outcome.rows:  # a pool that opened a fifth connection would beat 100 ms
        assert row["N=40 (ms)"] >= 40 * 10 / 4
        assert row["N=40: x floor"] == pytest.approx(row["N=40 (ms)"] / 100)


async def test_acquire_release_is_measured_for_every_pool(sdlab_endpoints: Endpoints) -> None:
    endpoints = {name: sdlab_endpoints[name] for name in ("mysql", "postgres")}
    outcome = await AcquireRelease(ops=400, rounds=2, tasks=20, size=4).run(bench(**endpoints))

    by_pool = {row["pool"]: row for row in outcome.rows}
    assert len(by_pool) == 6
    reference = by_pool["psycopg_pool (PostgreSQL)"]
    assert reference["1 task / psycopg_pool"] == 1.0
    assert reference["20 tasks / psycopg_pool"] == 1.0
    for row in outcome.rows:
        assert 0 < row["1 task: p50 (us)"] <= row["1 task: p99 (us)"]
        assert row["1 task (us/op)"] > 0
        assert row["20 tasks (us/op)"] > 0
        assert row["spread (median / best)"] >= 1.0


def test_the_command_writes_a_report_that_says_how_to_repeat_it(tmp_path: Path) -> None:
    done = sdlab(
        "pool", "experiment", "-n", "10", "-n", "30", "--no-peers", "--out", str(tmp_path),
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = (tmp_path / "report.md").read_text()
    assert "## pool: Connection pool vs a connection per task" in report
    assert f"sdlab pool experiment -n 10 -n 30 --no-peers --out {tmp_path}" in report
    assert "Published by the seed" in report
    assert (tmp_path / "pool.png").read_bytes()[:4] == b"\x89PNG"
    assert "pool-peers" not in report


def test_bad_arguments_are_refused_with_a_reason() -> None:
    done = sdlab("pool", "experiment", "-n", "0")
    assert done.returncode == 2
    assert "Invalid value for '--tasks' / '-n'" in done.stderr
    assert "greater than or equal to" in done.stderr
