"""`sdlab replica`: a cluster that outlives the command, as a user drives it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sdlab import infra
from sdlab.infra.service import port_is_open
from sdlab.replica.cli import app
from tests.helpers import sdlab


def run(*args: str) -> str:
    """One command in this process (a process of its own costs seconds of imports)."""
    done = CliRunner().invoke(app, list(args))
    assert done.exit_code == 0, done.output
    return done.output


def roles() -> dict[str, str]:
    return {row["node"]: row["role"] for row in json.loads(run("status", "--json"))}


@pytest.mark.slow
def test_up_status_promote_kill_failover_down(state_dir) -> None:
    assert "sdlab_app" in run("up", "--replicas", "2")
    # Another process finds the cluster: it outlives the command that started it.
    status = sdlab("replica", "status", "--json", env={"SDLAB_STATE_DIR": str(state_dir)})
    assert status.returncode == 0, status.stderr
    assert [row["role"] for row in json.loads(status.stdout)] == ["primary", "replica", "replica"]
    again = CliRunner().invoke(app, ["up"])
    assert again.exit_code == 1
    assert "already up" in again.output

    run("promote", "db2")
    assert roles() == {"db1": "replica", "db2": "primary", "db3": "replica"}
    unknown = CliRunner().invoke(app, ["promote", "db9"])
    assert unknown.exit_code == 1
    assert "no node called 'db9'" in unknown.output

    run("kill", "db2")
    run("failover")
    after = roles()
    assert after["db2"] == "down"
    assert sorted(after[n] for n in ("db1", "db3")) == ["primary", "replica"]

    servers = infra.kept("replica")
    run("down")
    assert not any(port_is_open(server.port) for server in servers)
    gone = CliRunner().invoke(app, ["status"])
    assert gone.exit_code == 1
    assert "no replica cluster" in gone.output
