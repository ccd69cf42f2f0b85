"""`sdlab replica`: a cluster that outlives the command, as a user drives it."""

from __future__ import annotations

import json

import pytest

from sdlab import infra
from sdlab.infra.service import port_is_open
from tests.helpers import sdlab


def roles(env: dict[str, str]) -> dict[str, str]:
    done = sdlab("replica", "status", "--json", env=env)
    assert done.returncode == 0, done.stderr
    return {row["node"]: row["role"] for row in json.loads(done.stdout)}


@pytest.mark.slow
def test_up_status_promote_kill_failover_down(state_dir) -> None:
    env = {"SDLAB_STATE_DIR": str(state_dir)}
    done = sdlab("replica", "up", "--replicas", "2", env=env)
    assert done.returncode == 0, done.stderr
    assert "sdlab_app" in done.stdout
    assert roles(env) == {"db1": "primary", "db2": "replica", "db3": "replica"}  # still up
    again = sdlab("replica", "up", env=env)
    assert again.returncode == 1
    assert "already up" in again.stderr

    assert sdlab("replica", "promote", "db2", env=env).returncode == 0
    assert roles(env) == {"db1": "replica", "db2": "primary", "db3": "replica"}
    unknown = sdlab("replica", "promote", "db9", env=env)
    assert unknown.returncode == 1
    assert "no node called 'db9'" in unknown.stderr

    assert sdlab("replica", "kill", "db2", env=env).returncode == 0
    assert sdlab("replica", "failover", env=env).returncode == 0
    after = roles(env)
    assert after["db2"] == "down"
    assert sorted(after[n] for n in ("db1", "db3")) == ["primary", "replica"]

    servers = infra.kept("replica")
    assert sdlab("replica", "down", env=env).returncode == 0
    assert not any(port_is_open(server.port) for server in servers)
    gone = sdlab("replica", "status", env=env)
    assert gone.returncode == 1
    assert "no replica cluster" in gone.stderr
