"""One word per thing across every command (docs/infra.md, "One vocabulary").

Walks every command of the one `sdlab` app, renders its `--help` the way a user sees it,
and fails on a synonym: another name for the database, the broker, a port or the seed;
two services with the same default port. The old spellings still work, hidden, with
one line on stderr."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from sdlab import frontend, systems
from sdlab.cli import app

ROOT: Any = typer.main.get_command(app)


def walk(group: Any = ROOT, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """(path, command) for every leaf command, hidden ones too."""
    found = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            found += walk(command, (*path, name))
        else:
            found.append(((*path, name), command))
    return found


COMMANDS = walk()
VISIBLE = [(path, command) for path, command in COMMANDS if not command.hidden]


def options(command: Any) -> list[Any]:
    return [p for p in command.params if getattr(p, "param_type_name", "") == "option"]


def names(command: Any) -> set[str]:
    return {name for p in options(command) if not p.hidden for name in (*p.opts, *p.secondary_opts)}


def rendered(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


# Each thing's one name, and the names it must not have (where they meant it before).
SYNONYMS = {
    "--url": "--db, --broker or --service-url",
    "--resp-port": "--port (kv: the Redis protocol)",
    "--ticket-server": "--db",
    "--original": "--seed",
    "--database": "--db",
    "--dsn": "--db",
    "--listen": "--host and --port",
    "--bind": "--host",
}
# Names that mean one thing in one place only.
ONLY_IN = {
    "--backend": {("lb", "serve")},  # a load balancer's backend HOST:PORT (issue 19)
    "--engine": {("sharding", "serve")},  # the kind of private shard servers it starts
    "--catalog": {("sharding", "serve")},  # the shard map's database, to join it
}
PORTS = {"--port", "--http-port", "--admin-port"}


def test_the_walk_finds_every_system() -> None:
    found = {path[0] for path, _ in COMMANDS}
    expected = {"infra", "lab"} | {s.name for s in systems.SYSTEMS if s.module("cli")}
    assert expected <= found


@pytest.mark.parametrize(("path", "command"), VISIBLE, ids=[" ".join(p) for p, _ in VISIBLE])
def test_no_synonym_in_help(path: tuple[str, ...], command: Any) -> None:
    shown = names(command)
    for old, new in SYNONYMS.items():
        assert old not in shown, f"sdlab {' '.join(path)} has {old}: say {new}"
    for name, places in ONLY_IN.items():
        assert name not in shown or path in places, f"sdlab {' '.join(path)}: {name}"
    for name in shown:
        if name.endswith("-port") or name == "--port":
            assert name in PORTS, f"sdlab {' '.join(path)}: a port named {name}"
    for p in options(command):
        if p.hidden:
            continue
        text = f"{p.help or ''} {p.metavar or ''}"
        if re.search(r"\b(mysql|postgresql)://", text) and "--catalog" not in p.opts:
            assert "--db" in p.opts, f"sdlab {' '.join(path)} {p.opts}: a database is --db"
        if re.search(r"\b(amqp|kafka)://", text):
            assert "--broker" in p.opts, f"sdlab {' '.join(path)} {p.opts}: a broker is --broker"
    text = rendered(path)
    assert not re.search(r"\boriginal\b", text, re.IGNORECASE), (
        f"sdlab {' '.join(path)} --help says 'original': the seed's word is 'seed'"
    )


def test_every_service_has_a_default_port_of_its_own() -> None:
    """Within a system, two commands may serve one service on one port (hashtags'
    `run` starts what `serve` serves); across systems, never."""
    seen: dict[int, str] = {}
    for path, command in VISIBLE:
        for p in options(command):
            if set(p.opts) & PORTS and isinstance(p.default, int) and p.default:
                where = f"sdlab {' '.join(path)} {p.opts[0]}"
                other = seen.get(p.default)
                assert other is None or other.split()[1] == path[0], (
                    f"{where} and {other}: {p.default}"
                )
                seen.setdefault(p.default, where)
    assert len(seen) >= 7  # kv (2), streamlogs, checkin, sharding, polling, ids, lb backends


def test_the_seed_experiment_is_experiment_everywhere() -> None:
    for system in systems.SYSTEMS:
        if system.module("experiment") is not None and system.module("cli") is not None:
            group = ROOT.commands[system.name]
            assert "experiment" in group.commands, f"sdlab {system.name} experiment"
            assert not group.commands["experiment"].hidden


RENAMED = [
    (path, old, new)
    for path, command in COMMANDS
    for old, new in getattr(command, "renames", {}).items()
]


def test_there_are_old_spellings() -> None:
    assert {
        (("kv", "serve"), "--backend", "--db"),
        (("brokers", "hello", "produce"), "--url", "--broker"),
    } <= set(RENAMED)


@pytest.mark.parametrize(
    ("path", "old", "new"), RENAMED, ids=[f"{' '.join(p)} {o}" for p, o, _ in RENAMED]
)
def test_an_old_spelling_is_hidden_and_still_works_with_a_warning(
    path: tuple[str, ...], old: str, new: str
) -> None:
    command = dict(COMMANDS)[path]
    assert new in names(command)
    assert old not in names(command)
    assert old not in rendered(path).replace(f"{old}-", "")
    result = CliRunner().invoke(app, [*path, old, "x", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [f"warning: {old} is deprecated, use {new}"]


def test_respell_rewrites_names_and_values_but_not_after_the_double_dash() -> None:
    renames = {"--backend": "--db", "-b": "-k"}
    args = ["--backend", "x", "--backend=y", "-b", "z", "--backends", "--", "--backend"]
    assert frontend.respell(args, renames) == [
        "--db", "x", "--db=y", "-k", "z", "--backends", "--", "--backend",
    ]  # fmt: skip
