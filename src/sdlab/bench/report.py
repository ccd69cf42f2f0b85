"""Render experiment results: Rich tables, Markdown, JSON and PNG charts.

The report opens with a summary (each experiment's headline against its target and the
seed), then one section per experiment: its table (split to fit 80 columns), its chart,
the seed's figures or a line on what the seed showed instead, and its notes.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from sdlab.bench.experiment import Chart, Headline, Row
from sdlab.bench.seed import Published, is_seed, showed

WIDTH = 80
"""Tables are split to fit a default terminal (and a raw report.md) this wide."""


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
    headline: Headline | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Result:
        data = dict(data)
        data["chart"] = Chart(**data["chart"]) if data.get("chart") else None
        data["published"] = Published(**data["published"]) if data.get("published") else None
        data["headline"] = Headline(**data["headline"]) if data.get("headline") else None
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


def _longest_word(column: str, rows: list[Row]) -> int:
    """The narrowest a column can be without cutting a word (its header's or a cell's)."""
    texts = [column, *(fmt(row.get(column)) for row in rows)]
    return max(len(word) for text in texts for word in text.split() or [""])


def _needs(column: str, rows: list[Row]) -> int:
    """Columns one column needs: its widest cell up to 16 characters (longer ones wrap),
    at least its longest word, plus the padding and border."""
    widest = max((len(fmt(row.get(column))) for row in rows), default=0)
    return max(min(widest, 16), _longest_word(column, rows)) + 3


def _key(columns: list[str], rows: list[Row]) -> list[str]:
    """The leading columns that name a row: the first, or as many of the first three
    as it takes for no two rows to read the same (brokers: broker and layer)."""
    for n in range(1, min(3, len(columns) - 1) + 1):
        if len({tuple(fmt(row.get(c)) for c in columns[:n]) for row in rows}) == len(rows):
            return columns[:n]
    return columns[:1]


def split_columns(rows: list[Row], width: int = WIDTH) -> list[list[str]]:
    """The columns in groups that each fit `width`, every group led by the columns that
    name the row, so a wide table becomes two or three readable ones."""
    columns = _columns(rows)
    if len(columns) < 3 or sum(_needs(c, rows) for c in columns) + 1 <= width:
        return [columns]
    key = _key(columns, rows)
    rest = columns[len(key) :]
    key_width = sum(_needs(c, rows) for c in key) + 1
    groups: list[list[str]] = [list(key)]
    used = key_width
    for column in rest:
        need = _needs(column, rows)
        if len(groups[-1]) > len(key) and used + need > width:
            groups.append(list(key))
            used = key_width
        groups[-1].append(column)
        used += need
    return groups


def rich_tables(rows: list[Row], width: int = WIDTH) -> list[Table]:
    """`rows` as one Rich table, or several side by side in meaning, to fit `width`."""
    return [rich_table(rows, columns=group) for group in split_columns(rows, width)]


def rich_table(rows: list[Row], title: str = "", columns: list[str] | None = None) -> Table:
    table = Table(title=title or None, title_justify="left")
    columns = columns or _columns(rows)
    for column in columns:
        numeric = all(isinstance(r.get(column), int | float) for r in rows if column in r)
        # The widths `split_columns` counted on: wrap between words, never cut one.
        table.add_column(
            column,
            justify="right" if numeric else "left",
            min_width=_longest_word(column, rows),
            max_width=_needs(column, rows) - 3,
        )
    for row in rows:
        table.add_row(*(fmt(row.get(column)) for column in columns))
    return table


def markdown_tables(rows: list[Row], width: int = WIDTH) -> str:
    """`rows` as Markdown, split like `rich_tables` so that each table fits `width`."""
    return "\n\n".join(markdown_table(rows, group) for group in split_columns(rows, width))


def markdown_table(rows: list[Row], columns: list[str] | None = None) -> str:
    columns = columns or _columns(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = (fmt(row.get(column)).replace("|", "\\|") for column in columns)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _number(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return math.nan


def _series(chart: Chart, rows: list[Row]) -> tuple[list[Any], dict[str, list[float]]]:
    """The x values, and each series' y value at each x (NaN where it has none): one
    series per y column, or per (group value, y column) when the chart has a group."""
    xs = list(dict.fromkeys(row.get(chart.x) for row in rows))
    groups = list(dict.fromkeys(row.get(chart.group) for row in rows)) if chart.group else [None]
    series: dict[str, list[float]] = {}
    for group in groups:
        mine = [row for row in rows if not chart.group or row.get(chart.group) == group]
        for column in chart.y:
            label = column if group is None else f"{chart.group} {fmt(group)}: {column}"
            by_x = {row.get(chart.x): _number(row.get(column)) for row in mine}
            series[label] = [by_x.get(x, math.nan) for x in xs]
    return xs, series


def _short(value: float) -> str:
    """A bar's label: 143k, not 142,857, so that neighbours do not run into each other."""
    if abs(value) >= 1e6:
        return f"{value / 1e6:.3g}M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:.3g}k"
    if float(value).is_integer():
        return f"{int(value):,}"  # a count: 10, not 10.00
    return fmt(value)


def draw(chart: Chart, rows: list[Row], title: str, path: Path) -> bool:
    """Save a PNG of `chart` over `rows`; False if there is no numeric value to draw.
    The legend sits outside the plot, so that it covers nothing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs, series = _series(chart, rows)
    # Grouped lines: a colour per group, a line style per column (the seed's dotted).
    colour: dict[str, str] = {}
    style: dict[str, str] = {}
    if chart.group:
        for i, label in enumerate(series):
            colour[label] = f"C{i // len(chart.y)}"
            style[label] = ("-", "--", ":", "-.")[i % len(chart.y) % 4]
    # A series with nothing to draw (the seed's, at sizes it did not run) stays out of
    # the legend too.
    series = {k: v for k, v in series.items() if not all(math.isnan(x) for x in v)}
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(9, 5), dpi=100)
    if chart.kind == "bar":
        width = 0.8 / len(series)
        labelled = len(series) * len(xs) <= 24  # each bar's value, where they fit
        for i, (label, values) in enumerate(series.items()):
            offsets = [j - 0.4 + width * (i + 0.5) for j in range(len(xs))]
            heights = [v - chart.baseline for v in values]
            bars = ax.bar(offsets, heights, width, bottom=chart.baseline, label=label)
            if labelled:
                texts = ["" if math.isnan(v) else _short(v) for v in values]
                ax.bar_label(bars, texts, fontsize=8, padding=2)
        if chart.baseline:
            ax.axhline(chart.baseline, color="black", linewidth=0.8)
        labels = [fmt(x) for x in xs]
        length = sum(len(label) for label in labels)
        if length > 60:  # would run into each other: the longer, the steeper
            ax.set_xticks(range(len(xs)), labels, rotation=20 if length < 150 else 35, ha="right")
        else:
            ax.set_xticks(range(len(xs)), labels)
    else:
        for label, values in series.items():
            # Points where the series has no value are left out, not a gap in its line.
            points = [(_number(x), v) for x, v in zip(xs, values, strict=True) if not math.isnan(v)]
            ax.plot(
                [x for x, _ in points],
                [v for _, v in points],
                marker="o",
                label=label,
                color=colour.get(label),
                linestyle=style.get(label),
            )
    if chart.logx:
        ax.set_xscale("log")
    if chart.logy:
        ax.set_yscale("log")
    ax.set_xlabel(chart.x)
    ax.set_ylabel(chart.ylabel or (chart.y[0] if len(chart.y) == 1 else ""))
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    if len(series) > 1:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.savefig(path, bbox_inches="tight")
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


def _figure(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{fmt(value)}{unit}"


def summary_rows(results: list[Result]) -> list[Row]:
    """One row per experiment: its headline, ours against the target and the seed."""
    rows = []
    for r in results:
        h = r.headline
        if r.error or h is None:
            rows.append(
                {"experiment": r.name, "headline": "failed" if r.error else "no headline declared"}
            )
            continue
        sign = "<=" if h.better == "lower" else ">="
        target = "-" if h.target is None else f"{sign} {_figure(h.target, h.unit)}"
        seed = "not published" if h.seed is None else _figure(h.seed, h.unit)
        met = {True: "yes", False: "no", None: "-"}[h.met]
        ours = _figure(h.value, h.unit)
        if h.value is not None and h.target is not None and fmt(h.value) == fmt(h.target):
            ours = f"{h.value:.4g}{h.unit}"  # 1.153x missed 1.15x: show why
        rows.append(
            {
                "experiment": r.name,
                "headline": h.figure,
                "ours": ours,
                "target": target,
                "met": met,
                "seed": f"{seed} ({h.seed_note})" if h.seed_note else seed,
            }
        )
    return rows


def _markdown(results: list[Result], charts: dict[str, str]) -> str:
    parts = ["# sdlab lab report", "", "## Summary", ""]
    parts += [
        "Each experiment's headline figure, ours against its target and beside the seed's "
        "figure for the same thing (the seed: the original experiments, measured on an M1 "
        "laptop with MySQL in Docker; compare ratios, not absolute times).",
        "",
        markdown_table(summary_rows(results)),
        "",
        "## Runs",
        "",
        "| experiment | size | ran at | took (s) | outcome |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        outcome = "error" if r.error else f"{len(r.rows)} rows"
        parts.append(
            f"| [{r.name}](#{r.name}) | {'quick' if r.quick else 'full'} "
            f"| {r.ran_at} | {r.seconds:.1f} | {outcome} |"
        )
    for r in results:
        parts += ["", f'<a id="{r.name}"></a>', f"## {r.name}: {r.title}", "", r.description, ""]
        params = ", ".join(f"{key}={value}" for key, value in r.params.items())
        parts += [f"Parameters: {params or 'none'}. Reproduce: `{r.command}`", ""]
        if r.error:
            parts += ["**The experiment failed:**", "", "```", r.error, "```", ""]
        if r.rows:
            parts += [markdown_tables(r.rows), ""]
        if r.name in charts:
            parts += [f"![{r.title}]({charts[r.name]})", ""]
        if r.published:
            by = "by the seed" if is_seed(r.published) else "elsewhere"
            parts += [f"Published {by} ({r.published.title}):", ""]
            parts += [markdown_tables(r.published.as_rows()), ""]
            if r.published.note:
                parts += [r.published.note, ""]
        if not (r.published and is_seed(r.published)) and (line := showed(r.name, r.system)):
            parts += [line, ""]
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
