"""Four processes at once, a million ids each: no duplicates, each process in order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ORDERED = {"snowflake", "simple", "uuid7", "central"}


def run_four(kind: str, count: int, *extra: str) -> list[list[int]]:
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "sdlab", "ids", "gen", kind, "-n", str(count), "--int", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        outputs.append([int(line) for line in out.split()])
    return outputs


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "count"),
    [
        ("snowflake", 1_000_000),  # machine ids leased from Redis: four different ones
        ("simple", 1_000_000),
        ("ulid", 1_000_000),
        ("uuid7", 1_000_000),
        ("central", 100_000),  # batches of 1,000 from MariaDB
        ("instagram", 2_000),  # one PostgreSQL round trip per id
        ("ticket", 2_000),  # one MariaDB round trip per id
    ],
)
def test_four_processes_make_no_duplicate(kind: str, count: int, tmp_path: Path) -> None:
    outputs = run_four(kind, count, "--state-dir", str(tmp_path))
    everything = [i for output in outputs for i in output]
    assert len(everything) == 4 * count
    assert len(set(everything)) == len(everything)
    if kind in ORDERED:
        assert all(output == sorted(output) for output in outputs)
