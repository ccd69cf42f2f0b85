"""The seed's published figures (see `seed_figures.toml`), for side-by-side tables, and
for experiments it published none for, one line on what it showed instead."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any


@dataclass(frozen=True)
class Published:
    """One table the original experiments published."""

    key: str
    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""

    def as_rows(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def lookup(self, column: str, **match: Any) -> Any:
        """The value in `column` of the row whose other columns equal `match`, or None."""
        for row in self.as_rows():
            if all(row.get(key) == value for key, value in match.items()):
                return row[column]
        return None


@cache
def _figures() -> dict[str, Any]:
    return tomllib.loads(files("sdlab.bench").joinpath("seed_figures.toml").read_text())


SHOWED = "showed"
"""The table of lines on what the seed showed, by experiment or system name."""


def published(key: str) -> Published:
    """The seed's table called `key` (e.g. "connection-pool")."""
    figures = {key: table for key, table in _figures().items() if key != SHOWED}
    if key not in figures:
        raise KeyError(f"no published figures called {key!r}; there are: {', '.join(figures)}")
    table = figures[key]
    return Published(
        key,
        table["title"],
        list(table["columns"]),
        [list(row) for row in table["rows"]],
        table.get("note", ""),
    )


def is_seed(table: Published) -> bool:
    """Whether `table` is one of the seed's (experiments may show other sources')."""
    return table.key != SHOWED and table.key in _figures()


def showed(experiment: str, system: str) -> str:
    """What the seed showed where it published no figures for `experiment` (looked up by
    its name, then its system's); "" if nothing is written down."""
    lines: dict[str, str] = _figures().get(SHOWED, {})
    return lines.get(experiment) or lines.get(system, "")
