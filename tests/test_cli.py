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


SEED_EXPERIMENT = [
    "brokers", "kv", "locks", "streamlogs", "pool", "polling", "ids", "checkin", "lb",
    "locking", "replica", "sharding",
]  # fmt: skip


@pytest.mark.parametrize("system", SEED_EXPERIMENT)
def test_the_seed_experiment_is_called_experiment(system: str) -> None:
    assert (system, "experiment") in ALL


@pytest.mark.parametrize("system", ["brokers", "kv", "locks", "streamlogs", "ids"])
def test_the_old_name_still_works_hidden_with_a_warning(system: str) -> None:
    group = typer.main.get_command(app).commands[system]  # type: ignore[attr-defined]
    assert group.commands["bench"].hidden
    listed = CliRunner().invoke(app, [system, "--help"]).output
    assert " bench " not in listed
    result = CliRunner().invoke(app, [system, "bench", "--no-such-flag"])
    assert result.exit_code == 2  # parsed as the same command: its options, its errors
    old = CliRunner().invoke(app, [system, "bench", "--help"])
    assert old.exit_code == 0
    assert "experiment" in old.output


@pytest.mark.parametrize("system", ["brokers", "kv", "locks", "streamlogs", "ids"])
def test_the_old_name_warns_once_on_stderr(system: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from sdlab import lab

    ran = []
    monkeypatch.setattr(lab, "run_as_command", lambda selected, **kw: ran.append(kw))
    result = CliRunner().invoke(app, [system, "bench", "--quick"])
    assert result.exit_code == 0, result.output
    assert ran == [{"quick": True, "out": None}]
    assert f"`sdlab {system} bench` is now `sdlab {system} experiment`" in result.output
