from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.progress import Progress

from sdlab import lab
from sdlab.bench import REGISTRY, Bench, Chart, Experiment, Headline, Outcome, Row, published
from sdlab.bench.report import (
    Result,
    _series,
    fmt,
    load,
    markdown_table,
    rich_tables,
    split_columns,
    summary_rows,
    write,
)


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
    assert "Published by the seed (Connection pool" in text
    assert "The seed's floor for its pool column" in text
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


def test_the_summary_gives_each_headline_against_its_target_and_the_seed(tmp_path: Path) -> None:
    met = Headline("time / floor", 1.1, unit="x", target=1.15, seed=3.6, seed_note="N=10,000")
    missed = Headline("speed-up", 2.5, unit="x", target=3, better="higher")
    results = [
        result("met", headline=met),
        result("missed", headline=missed),
        result("plain"),  # declares none
        result("broken", error="Traceback ..."),
    ]
    rows = summary_rows(results)
    close = summary_rows([result("close", headline=Headline("r", 1.1534, unit="x", target=1.15))])
    assert (close[0]["ours"], close[0]["target"], close[0]["met"]) == ("1.153x", "<= 1.15x", "no")
    assert rows[0] == {
        "experiment": "met",
        "headline": "time / floor",
        "ours": "1.10x",
        "target": "<= 1.15x",
        "met": "yes",
        "seed": "3.60x (N=10,000)",
    }
    assert (rows[1]["met"], rows[1]["target"], rows[1]["seed"]) == (
        "no",
        ">= 3x",
        "not published",
    )
    assert rows[2] == {"experiment": "plain", "headline": "no headline declared"}
    assert rows[3]["headline"] == "failed"
    text = write(results, tmp_path).read_text()
    assert (
        text.index("## Summary")
        < text.index("| met | time / floor | 1.10x |")
        < text.index("## met")
    )
    assert load(tmp_path)[0].headline == met


def test_a_section_without_the_seeds_figures_says_what_the_seed_showed(tmp_path: Path) -> None:
    text = write([result("kv-throughput", system="kv", published=None)], tmp_path).read_text()
    assert "The seed published no figures: a key-value store" in text
    hermitage = published("connection-pool").__class__("hermitage", "Hermitage", ["a"], [[1]])
    text = write([result("locking", system="locking", published=hermitage)], tmp_path).read_text()
    assert "Published elsewhere (Hermitage)" in text
    assert "The seed typed three locking cases by hand" in text


def test_wide_tables_are_split_to_fit_80_columns_each_led_by_the_first() -> None:
    rows = [
        {
            "pool": "SQLAlchemy QueuePool (MariaDB)",
            **{f"measure {i} (us/op)": 1234.5 for i in range(9)},
        }
    ]
    groups = split_columns(rows)
    assert len(groups) > 1
    assert all(group[0] == "pool" for group in groups)
    assert [c for g in groups for c in g[1:]] == list(rows[0])[1:]
    from rich.console import Console

    console = Console(width=80, record=True)
    for table in rich_tables(rows):
        console.print(table)
    assert "…" not in console.export_text()  # nothing cut to "measu…"
    assert split_columns([{"a": 1, "b": 2, "c": 3}]) == [["a", "b", "c"]]


def test_split_tables_repeat_every_column_it_takes_to_tell_the_rows_apart() -> None:
    rows = [
        {"broker": b, "layer": layer, **{f"measure {i} (msgs/s)": 12345.6 for i in range(6)}}
        for b in ("RabbitMQ", "Kafka")
        for layer in ("bare loop", "sdlab Broker")
    ]
    groups = split_columns(rows)
    assert len(groups) > 1
    assert all(group[:2] == ["broker", "layer"] for group in groups)
    assert [c for g in groups for c in g[2:]] == list(rows[0])[2:]


def test_a_grouped_chart_draws_one_series_per_group(tmp_path: Path) -> None:
    rows: list[Row] = [
        {"ids": n, "K": k, "time (ms)": n / k} for n in (1_000_000, 10_000_000) for k in (100, 1000)
    ]
    chart = Chart("K", ["time (ms)"], kind="line", group="ids")
    xs, series = _series(chart, rows)
    assert xs == [100, 1000]
    assert series == {
        "ids 1,000,000: time (ms)": [10_000.0, 1_000.0],
        "ids 10,000,000: time (ms)": [100_000.0, 10_000.0],
    }
    bars = Chart("pool", ["x floor"], baseline=1.0)
    report = write(
        [
            result("grouped", rows=rows, chart=chart),
            result(
                "ratios",
                rows=[{"pool": "a", "x floor": 1.03}, {"pool": "b", "x floor": 1.11}],
                chart=bars,
            ),
        ],
        tmp_path,
    )
    assert "![grouped title](grouped.png)" in report.read_text()
    assert (tmp_path / "ratios.png").read_bytes()[:4] == b"\x89PNG"


def test_lab_report_renders_again_with_the_headline_declared_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    @dataclass
    class Declared(Experiment):
        """Declares a headline after it ran."""

        name = "declared"
        system = "test"
        title = "Declared"
        n: int = 3

        async def run(self, bench: Bench) -> Outcome:
            return Outcome([])

        def headline(self, rows: list[Row]) -> Headline | None:
            return Headline(f"time, n={self.n}", rows[-1]["time (ms)"], unit=" ms", target=100)

    monkeypatch.setitem(REGISTRY, "declared", Declared)
    old = published("connection-pool").__class__(
        "connection-pool", "old title", ["N"], [[1]], "old"
    )
    write([result("declared", published=old)], tmp_path)
    assert "no headline declared" in (tmp_path / "report.md").read_text()
    text = lab.rerender(tmp_path).read_text()
    assert "| declared | time, n=3 | 120.2 ms | <= 100 ms | no |" in text
    assert "old title" not in text  # the seed's figures as seed_figures.toml has them now
    with pytest.raises(FileNotFoundError):
        lab.rerender(tmp_path / "nothing")


def test_a_headline_that_fails_costs_the_rows_nothing() -> None:
    @dataclass
    class Sloppy(Experiment):
        """Its headline looks for a column it does not make."""

        name = "sloppy"
        system = "test"
        title = "Sloppy"

        async def run(self, bench: Bench) -> Outcome:
            return Outcome([{"N": 1, "time (ms)": 2.0}])

        def headline(self, rows: list[Row]) -> Headline | None:
            return Headline("speed", rows[0]["speed"])

    done = lab._run_one(Sloppy(), Bench({}, Progress()), quick=True, endpoints={}, command=None)
    assert done.error is None
    assert done.rows == [{"N": 1, "time (ms)": 2.0}]
    assert done.headline is None
    assert any(note.startswith("The headline could not be computed") for note in done.notes)
