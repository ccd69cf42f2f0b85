from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.progress import Progress

from sdlab import lab
from sdlab.bench import Bench, Chart, Experiment, Outcome, published
from sdlab.bench.report import Result, fmt, load, markdown_table, write


def result(name: str, **changes) -> Result:
    fields = dict(
        name=name,
        system="test",
        title=f"{name} title",
        description="What it shows.",
        params={"n": 3},
        quick=True,
        ran_at="2026-11-25 10:00 UTC",
        seconds=1.5,
        command=f"sdlab lab run --only {name} --quick",
        environment={"machine": "test box", "services": []},
        rows=[
            {"N": 10, "time (ms)": 12.5, "errors": "none"},
            {"N": 100, "time (ms)": 120.25, "errors": "error: too many"},
        ],
        chart=Chart("N", ["time (ms)"], kind="line", logx=True),
        published=published("connection-pool"),
        notes=["a finding"],
    )
    fields.update(changes)
    return Result(**fields)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "-"),
        (True, "yes"),
        (12345, "12,345"),
        (1234.5, "1,234"),
        (123.456, "123.5"),
        (1.234, "1.23"),
        (0.01234, "0.0123"),
        (0.0, "0.00"),
        ("error: x", "error: x"),
        (float("nan"), "-"),
    ],
)
def test_fmt(value, text) -> None:
    assert fmt(value) == text


def test_markdown_table_escapes_pipes_and_fills_gaps() -> None:
    table = markdown_table([{"a": "x|y"}, {"b": 2}])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| x\\|y | - |", "| - | 2 |"]


def test_write_makes_markdown_json_and_a_png(tmp_path: Path) -> None:
    report = write([result("one"), result("two", chart=None)], tmp_path)
    text = report.read_text()
    assert "## one: one title" in text
    assert "| N | time (ms) | errors |" in text
    assert "![one title](one.png)" in text
    assert "two.png" not in text
    assert "Published by the original experiment" in text
    assert "| 10,000 |" in text
    assert "Reproduce: `sdlab lab run --only one --quick`" in text
    assert (tmp_path / "one.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "two.png").exists()
    again = load(tmp_path)
    assert [r.name for r in again] == ["one", "two"]
    assert again[0].chart == Chart("N", ["time (ms)"], kind="line", logx=True)
    assert again[0].published == published("connection-pool")
    stored = json.loads((tmp_path / "results.json").read_text())
    assert stored["experiments"][0]["rows"][0]["N"] == 10


def test_no_png_when_nothing_is_numeric(tmp_path: Path) -> None:
    write([result("one", rows=[{"N": "a", "time (ms)": "error"}])], tmp_path)
    assert not (tmp_path / "one.png").exists()


def test_a_failed_experiment_is_recorded_not_raised(tmp_path: Path) -> None:
    @dataclass
    class Broken(Experiment):
        """Always fails."""

        name = "broken"
        system = "test"
        title = "Broken"

        async def run(self, bench: Bench) -> Outcome:
            raise RuntimeError("the server went away")

    outcome = lab._run_one(Broken(), Bench({}, Progress()), quick=True, endpoints={}, command=None)
    assert outcome.error
    assert "RuntimeError: the server went away" in outcome.error
    text = write([outcome], tmp_path).read_text()
    assert "The experiment failed" in text
    assert "the server went away" in text


def test_merge_keeps_earlier_results_of_other_experiments() -> None:
    merged = lab._merge(
        [result("roundtrip", seconds=1.0), result("gone")], [result("roundtrip", seconds=2.0)]
    )
    assert [(r.name, r.seconds) for r in merged] == [("roundtrip", 2.0), ("gone", 1.5)]
