"""The locks benchmark and demo, small, end to end."""

from __future__ import annotations

import re

from rich.progress import Progress

from sdlab.bench import Bench
from sdlab.infra.pytest_plugin import Endpoints
from sdlab.locks.experiment import CONTENDERS, LockCost
from tests.helpers import sdlab


async def test_every_lock_is_measured(sdlab_endpoints: Endpoints) -> None:
    endpoints = {name: sdlab_endpoints[name] for name in LockCost.services}
    experiment = LockCost(cycles=30, paused_cycles=5, seconds=0.3)
    outcome = await experiment.run(Bench(endpoints, Progress()))
    assert [row["lock"] for row in outcome.rows] == [c.lock for c in CONTENDERS]
    assert {c.paused for c in CONTENDERS} == {0, 1, 2}
    for row, contender in zip(outcome.rows, CONTENDERS, strict=True):
        assert 0 < row["p50 (ms)"] <= row["p99 (ms)"]
        contended = row["8 tasks: acquisitions/s"]
        assert contended is None if not contender.concurrent else contended > 0
    assert next(r for r in outcome.rows if r["lock"] == "redis-py Lock")["p50 / redis-py"] == 1


def test_the_demo_loses_nothing_under_a_lock() -> None:
    done = sdlab(
        "locks", "demo", "-k", "none", "-k", "redis", "--processes", "3", "--increments", "40",
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert re.search(r"│ redis\s+│\s+3 │\s+120 │\s+120 │\s+0 │", done.stdout), done.stdout
    assert re.search(r"│ none\s+│\s+3 │\s+120 │", done.stdout)
