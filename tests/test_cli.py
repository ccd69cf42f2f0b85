"""Every command has a --help that exits cleanly and says what it does."""

from __future__ import annotations

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from sdlab.cli import app


def commands(group: TyperGroup, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, command in group.commands.items():
        if isinstance(command, TyperGroup):
            found += commands(command, (*path, name))
        else:
            found.append((*path, name))
    return found


ALL = commands(typer.main.get_command(app))  # type: ignore[arg-type]


def test_the_command_tree_has_the_foundation() -> None:
    assert {("infra", "up"), ("infra", "status"), ("infra", "down"), ("lab", "run")} <= set(ALL)


@pytest.mark.parametrize("path", ALL, ids=lambda p: " ".join(p) or "sdlab")
def test_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    assert len(result.output.strip().splitlines()) > 5
