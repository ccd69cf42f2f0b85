"""Finding services: the environment first, then sdlab's own instance, then the usual port."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from sdlab import infra
from sdlab.infra.instance import Instance
from sdlab.infra.service import port_is_open
from tests.helpers import sdlab


def closed_port() -> int:
    import port_for

    port = port_for.select_random()
    assert not port_is_open(port)
    return port


def test_the_environment_wins_over_the_usual_port(state_dir, monkeypatch) -> None:
    with infra.redis() as (server,):
        monkeypatch.setenv("SDLAB_REDIS_URL", server.url)
        from sdlab.config import settings

        settings.cache_clear()
        found = infra.endpoint("redis")
        assert (found.origin, found.port) == ("env", server.port)
        assert infra.up(["redis"])["redis"].port == server.port


def test_status_names_the_service_the_address_and_why() -> None:
    """The acceptance case: an unreachable SDLAB_MYSQL_URL is reported, exit 1, no traceback."""
    port = closed_port()
    done = sdlab("infra", "status", env={"SDLAB_MYSQL_URL": f"mysql://root@127.0.0.1:{port}/"})
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    problem = next(line for line in done.stderr.splitlines() if "MariaDB" in line)
    assert f"127.0.0.1:{port}" in problem
    assert "SDLAB_MYSQL_URL" in problem
    assert "connection refused" in problem


def test_up_does_not_replace_an_unreachable_env_url(state_dir) -> None:
    port = closed_port()
    done = sdlab(
        "infra",
        "up",
        "mysql",
        env={
            "SDLAB_MYSQL_URL": f"mysql://root@127.0.0.1:{port}/",
            "SDLAB_STATE_DIR": str(state_dir),
        },
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"MariaDB at 127.0.0.1:{port}: connection refused" in done.stderr
    assert "unset it" in done.stderr
    assert not (state_dir / "managed").exists()


def test_a_malformed_env_url_is_named() -> None:
    done = sdlab("infra", "status", env={"SDLAB_MYSQL_URL": "http://example.org"})
    assert done.returncode == 1
    assert "SDLAB_MYSQL_URL" in done.stderr
    assert "Traceback" not in done.stderr


def test_up_private_outlives_the_command_and_down_removes_it(state_dir) -> None:
    env = {"SDLAB_STATE_DIR": str(state_dir)}
    done = sdlab("infra", "up", "--private", "redis", "kafka", env=env)
    assert done.returncode == 0, done.stderr

    status = sdlab("infra", "status", "--json", "redis", "kafka", env=env)
    assert status.returncode == 0, status.stderr
    rows = json.loads(status.stdout)
    assert [(r["service"], r["origin"], r["healthy"]) for r in rows] == [
        ("redis", "managed", True),
        ("kafka", "managed", True),
    ]
    managed = [Instance.load(state_dir / "managed" / name) for name in ("redis", "kafka")]
    assert all(m.running for m in managed)
    pids = [m.pid for m in managed]

    again = sdlab("infra", "up", "--private", "redis", env=env)  # reuses, starts nothing new
    assert again.returncode == 0
    assert Instance.load(state_dir / "managed" / "redis").pid == pids[0]

    down = sdlab("infra", "down", env=env)
    assert down.returncode == 0, down.stderr
    for pid, instance in zip(pids, managed, strict=True):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert not port_is_open(instance.port)
    assert not (state_dir / "managed").exists()


def test_an_orphan_is_swept_when_its_owner_died(state_dir) -> None:
    """An owner killed without cleanup (os._exit skips atexit) leaves a server running;
    the next `down` finds it by its recorded owner and stops it."""
    script = textwrap.dedent("""
        import os
        from sdlab import infra
        server = infra.redis()[0]
        print(server.home, server.pid, flush=True)
        os._exit(0)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "SDLAB_STATE_DIR": str(state_dir)},
        check=True,
    )
    home, pid = done.stdout.split()
    assert psutil.pid_exists(int(pid))
    assert Path(home).exists()

    swept = infra.down()
    assert [instance.pid for instance in swept] == [None]  # stopped, so no pid any more
    assert (
        not psutil.pid_exists(int(pid)) or psutil.Process(int(pid)).status() == psutil.STATUS_ZOMBIE
    )
    assert not Path(home).exists()


def test_a_kept_group_outlives_its_process_until_down(state_dir) -> None:
    """`mariadb(keep=...)` servers stay when their process exits; `kept` finds them,
    they can be crashed and started again from another process, `down` removes them."""
    script = "from sdlab import infra; print(infra.mariadb(1, keep='cluster')[0].port)"
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "SDLAB_STATE_DIR": str(state_dir)},
        check=True,
    )
    (server,) = infra.kept("cluster")
    assert server.port == int(done.stdout)
    assert server.answers()
    server.kill()
    assert not server.answers()
    server.start()
    assert infra.kept("cluster")[0].pid == server.pid  # the record follows the restart
    stopped = infra.down()
    assert [s.port for s in stopped] == [server.port]
    assert not port_is_open(server.port)
    assert infra.kept("cluster") == []
    with pytest.raises(ValueError, match="names no service"):
        infra.kept("mysql")


def test_down_leaves_other_owners_instances_alone(state_dir) -> None:
    with infra.redis() as (mine,):
        infra.down()
        assert mine.running
        assert mine.home.exists()


def test_status_json_is_machine_readable() -> None:
    done = sdlab("infra", "status", "--json", "mysql", "redis")
    rows = json.loads(done.stdout)
    assert {r["service"] for r in rows} == {"mysql", "redis"}
    assert all(r["healthy"] and r["version"] for r in rows)


@pytest.mark.parametrize(
    "args", [["infra", "status", "nosuch"], ["lab", "run", "--only", "nosuch"]]
)
def test_unknown_names_are_usage_errors(args: list[str]) -> None:
    done = sdlab(*args)
    assert done.returncode == 2
    assert "nosuch" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_packages_without_root_say_how_to_install(monkeypatch) -> None:
    from sdlab.infra import resolve
    from sdlab.infra.errors import BinaryNotFound, InfraError

    def missing() -> list[str]:
        raise BinaryNotFound("redis-server", "install it")

    redis = infra.service("redis")
    monkeypatch.setattr(redis, "programs", missing)
    monkeypatch.setattr(resolve.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(resolve, "TOOLS", {})
    monkeypatch.setattr(resolve, "PLUGINS", {})
    with pytest.raises(InfraError, match=r"sudo apt-get install .* redis-server"):
        resolve.install_missing([redis, infra.service("kafka")])
    assert resolve.install_missing([infra.service("kafka")]) == []  # nothing missing


def test_missing_client_tools_are_installed_too(monkeypatch) -> None:
    from sdlab.infra import resolve
    from sdlab.infra.errors import InfraError

    monkeypatch.setattr(resolve, "TOOLS", {"no-such-program-sdlab": "no-such-package-sdlab"})
    monkeypatch.setattr(resolve.os, "geteuid", lambda: 1000)
    with pytest.raises(InfraError, match=r"sudo apt-get install .* no-such-package-sdlab"):
        resolve.install_missing([infra.service("kafka")])


def test_missing_server_plugins_are_installed_too(monkeypatch) -> None:
    from sdlab.infra import resolve
    from sdlab.infra.errors import InfraError

    monkeypatch.setattr(resolve, "TOOLS", {})
    monkeypatch.setattr(resolve, "PLUGINS", {"/no/such/plugin-sdlab.so": "no-such-plugin-sdlab"})
    monkeypatch.setattr(resolve.os, "geteuid", lambda: 1000)
    with pytest.raises(InfraError, match=r"sudo apt-get install .* no-such-plugin-sdlab"):
        resolve.install_missing([infra.service("kafka")])


def test_infra_run_serves_until_interrupted(state_dir) -> None:
    import signal

    env = {**os.environ, "SDLAB_STATE_DIR": str(state_dir), "COLUMNS": "200"}
    process = subprocess.Popen(
        [sys.executable, "-m", "sdlab", "infra", "run", "redis", "-n", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    urls = []
    for line in process.stdout:
        urls += re.findall(r"redis://127\.0\.0\.1:\d+/0", line)
        if "Ctrl-C" in line:
            break
    assert len(urls) == 2
    homes = list((state_dir / "run").iterdir())
    assert len(homes) == 2
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 0
    assert not list((state_dir / "run").iterdir())
