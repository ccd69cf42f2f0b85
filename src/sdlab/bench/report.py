"""Render experiment results: Rich tables, Markdown, JSON and PNG charts."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from sdlab.bench.experiment import Chart, Row
from sdlab.bench.seed import Published


@dataclass
class Result:
    """One experiment's run, as recorded in `results.json`."""

    name: str
    system: str
    title: str
    description: str
    params: dict[str, Any]
    quick: bool
    ran_at: str
    seconds: float
    command: str
    environment: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    chart: Chart | None = None
    published: Published | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Result:
        data = dict(data)
        data["chart"] = Chart(**data["chart"]) if data.get("chart") else None
        data["published"] = Published(**data["published"]) if data.get("published") else None
        return cls(**data)


def fmt(value: Any) -> str:
    """A cell as people read it: thousands separators, a sensible number of digits."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        size = abs(value)
        if size >= 1000:
            return f"{value:,.0f}"
        if size >= 100:
            return f"{value:.1f}"
        if size >= 1 or size == 0:
            return f"{value:.2f}"
        return f"{value:.3g}"
    return str(value)


def _columns(rows: list[Row]) -> list[str]:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)


def rich_table(rows: list[Row], title: str = "") -> Table:
    table = Table(title=title or None, title_justify="left")
    columns = _columns(rows)
    for column in columns:
        numeric = all(isinstance(r.get(column), int | float) for r in rows if column in r)
        table.add_column(column, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*(fmt(row.get(column)) for column in columns))
    return table


def markdown_table(rows: list[Row]) -> str:
    columns = _columns(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = (fmt(row.get(column)).replace("|", "\\|") for column in columns)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def draw(chart: Chart, rows: list[Row], title: str, path: Path) -> bool:
    """Save a PNG of `chart` over `rows`; False if there is no numeric value to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def number(value: Any) -> float:
        return (
            float(value)
            if isinstance(value, int | float) and not isinstance(value, bool)
            else math.nan
        )

    series = {column: [number(row.get(column)) for row in rows] for column in chart.y}
    if all(math.isnan(v) for values in series.values() for v in values):
        return False
    xs = [row.get(chart.x) for row in rows]
    fig, ax = plt.subplots(figsize=(9, 5), dpi=100)
    if chart.kind == "bar":
        width = 0.8 / len(series)
        for i, (column, values) in enumerate(series.items()):
            offsets = [j - 0.4 + width * (i + 0.5) for j in range(len(xs))]
            ax.bar(offsets, values, width, label=column)
        labels = [fmt(x) for x in xs]
        if sum(len(label) for label in labels) > 60:  # would run into each other
            ax.set_xticks(range(len(xs)), labels, rotation=20, ha="right")
        else:
            ax.set_xticks(range(len(xs)), labels)
    else:
        for column, values in series.items():
            ax.plot([number(x) for x in xs], values, marker="o", label=column)
    if chart.logx:
        ax.set_xscale("log")
    if chart.logy:
        ax.set_yscale("log")
    ax.set_xlabel(chart.x)
    ax.set_ylabel(chart.ylabel or (chart.y[0] if len(chart.y) == 1 else ""))
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def load(out: Path) -> list[Result]:
    """Results already in `out/results.json` (none if absent or unreadable)."""
    try:
        data = json.loads((out / "results.json").read_text())
        return [Result.from_json(entry) for entry in data["experiments"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def write(results: list[Result], out: Path) -> Path:
    """Write `report.md`, `results.json` and one PNG per chart into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    charts: dict[str, str] = {}
    for result in results:
        png = out / f"{result.name}.png"
        if result.chart and result.rows and draw(result.chart, result.rows, result.title, png):
            charts[result.name] = png.name
        else:
            png.unlink(missing_ok=True)
    payload = {"experiments": [asdict(result) for result in results]}
    (out / "results.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    report = out / "report.md"
    report.write_text(_markdown(results, charts))
    return report


def _markdown(results: list[Result], charts: dict[str, str]) -> str:
    parts = ["# sdlab lab report", ""]
    parts.append("| experiment | system | size | ran at | took (s) | outcome |")
    parts.append("|---|---|---|---|---|---|")
    for r in results:
        outcome = "error" if r.error else f"{len(r.rows)} rows"
        parts.append(
            f"| [{r.name}](#{r.name}) | {r.system} | {'quick' if r.quick else 'full'} "
            f"| {r.ran_at} | {r.seconds:.1f} | {outcome} |"
        )
    for r in results:
        parts += ["", f'<a id="{r.name}"></a>', f"## {r.name}: {r.title}", "", r.description, ""]
        params = ", ".join(f"{key}={value}" for key, value in r.params.items())
        parts += [f"Parameters: {params or 'none'}. Reproduce: `{r.command}`", ""]
        if r.error:
            parts += ["**The experiment failed:**", "", "```", r.error, "```", ""]
        if r.rows:
            parts += [markdown_table(r.rows), ""]
        if r.name in charts:
            parts += [f"![{r.title}]({charts[r.name]})", ""]
        if r.published:
            parts += [
                f"Published by the original experiment ({r.published.title}):",
                "",
                markdown_table(r.published.as_rows()),
                "",
            ]
            if r.published.note:
                parts += [r.published.note, ""]
        parts += [f"- {note}" for note in r.notes]
        env = r.environment
        services = "; ".join(
            f"{s['title']} at {s['address']} ({s['origin']}): {s['version']}"
            for s in env.get("services", [])
        )
        parts += [
            "",
            f"Machine: {env.get('machine', '?')}."
            + (f" Services: {services}." if services else ""),
        ]
    return "\n".join(parts).rstrip() + "\n"
