"""The whole pipeline: `sdlab lab run` on the real services writes the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import sdlab


@pytest.mark.slow
def test_roundtrip_report_end_to_end(tmp_path: Path) -> None:
    done = sdlab(
        "lab", "run", "--only", "roundtrip", "--quick", "--out", str(tmp_path), timeout=300
    )
    assert done.returncode == 0, done.stderr
    report = (tmp_path / "report.md").read_text()
    assert "## roundtrip: Round trip to each backing service" in report
    for service in ("MariaDB", "PostgreSQL", "Redis", "RabbitMQ", "Kafka"):
        assert f"| {service} |" in report
    assert (tmp_path / "roundtrip.png").read_bytes()[:4] == b"\x89PNG"
    (result,) = json.loads((tmp_path / "results.json").read_text())["experiments"]
    assert result["params"] == {"requests": 500, "warmup": 50}
    assert all(0 < row["p50 (ms)"] <= row["p99 (ms)"] for row in result["rows"])


def test_lab_list_shows_the_roundtrip_experiment() -> None:
    done = sdlab("lab", "list")
    assert done.returncode == 0
    assert "roundtrip" in done.stdout


def test_experiments_come_in_the_order_of_the_systems() -> None:
    from sdlab import lab, systems

    names = [system.name for system in [systems.FOUNDATION, *systems.SYSTEMS]]
    ranks = [names.index(cls.system) for cls in lab.experiments().values() if cls.system in names]
    assert ranks == sorted(ranks)
    assert next(iter(lab.experiments())) == "roundtrip"


def test_select_names_what_it_does_not_know() -> None:
    from sdlab import lab

    assert [cls.name for cls in lab.select(["roundtrip"])] == ["roundtrip"]
    with pytest.raises(lab.UnknownExperiment, match="no experiment or system called nosuch; known"):
        lab.select(["pool", "nosuch"])


def test_an_unknown_only_is_a_usage_error() -> None:
    done = sdlab("lab", "run", "--only", "nosuch")
    assert done.returncode == 2
    assert "Invalid value for --only: no experiment or system called nosuch" in done.stderr
    assert "roundtrip" in done.stderr
