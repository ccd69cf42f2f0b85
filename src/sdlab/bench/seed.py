"""The seed's published figures (see `seed_figures.toml`), for side-by-side tables."""

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


def published(key: str) -> Published:
    """The seed's table called `key` (e.g. "connection-pool")."""
    figures = _figures()
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
