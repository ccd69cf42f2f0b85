"""`sdlab locking` as a user runs it, in a process of its own."""

from __future__ import annotations

import json

from tests.helpers import sdlab


def test_demo_prints_the_timeline_with_the_wait() -> None:
    done = sdlab("locking", "demo", "for-update", "--db", "mysql")
    assert done.returncode == 0, done.stderr
    assert "for-update on MariaDB" in done.stdout
    assert "waited" in done.stdout
    assert "for T1" in done.stdout
    assert "not as the case expects" not in done.stdout


def test_anomalies_json_is_one_object_per_cell() -> None:
    done = sdlab("locking", "anomalies", "--json", "--db", "postgres", "-a", "G2-item", "-a", "P4")
    assert done.returncode == 0, done.stderr
    cells = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(cells) == 8  # 4 levels x 2 anomalies
    assert {tuple(c) for c in cells} == {
        ("engine", "level", "anomaly", "prevented", "how", "mark", "hermitage")
    }
    by_cell = {(c["level"], c["anomaly"]): c for c in cells}
    assert by_cell[("SERIALIZABLE", "G2-item")] | {} == {
        "engine": "postgresql",
        "level": "SERIALIZABLE",
        "anomaly": "G2-item",
        "prevented": True,
        "how": "aborted",
        "mark": "✓",
        "hermitage": "✓",
    }
    assert by_cell[("REPEATABLE READ", "G2-item")]["prevented"] is False


def test_an_unknown_case_is_refused_with_the_known_ones() -> None:
    done = sdlab("locking", "demo", "nosuch")
    assert done.returncode == 2
    assert "deadlock" in done.stderr
