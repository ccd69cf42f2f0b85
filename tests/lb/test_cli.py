"""`sdlab lb` as a user runs it: errors in one line, workers sharing a port."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import port_for
import psutil
import pytest

from sdlab.infra.process import ServerProcess, sdlab_command
from sdlab.lb.experiment import backend_process, free_ports
from tests.helpers import sdlab


def test_a_bad_config_file_is_one_line_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "lb.toml"
    config.write_text('[listen]\nstrategy = "fastest"\n\n[[backend]]\naddress = "127.0.0.1:1"\n')
    done = sdlab("lb", "serve", "--config", str(config))
    assert done.returncode == 2
    assert f"error: {config}, line 2: listen.strategy: no strategy called 'fastest'" in done.stderr


def test_serve_without_backends_says_so() -> None:
    done = sdlab("lb", "serve", "--port", "0")
    assert done.returncode == 2
    assert "no backends" in done.stderr


def test_a_bad_delay_is_a_usage_error() -> None:
    done = sdlab("lb", "backends", "--delay", "0.5-0.2")
    assert done.returncode == 2
    assert "LOW <= HIGH" in done.stderr


@pytest.mark.slow
def test_workers_share_the_port() -> None:
    (backend_port,) = free_ports(1)
    port = int(port_for.select_random())
    command = sdlab_command(
        "lb", "serve", "--port", str(port), "--admin-port", "0", "--workers", "2",
        "--backend", f"127.0.0.1:{backend_port}",
    )  # fmt: skip
    with backend_process(backend_port, delay="0"), ServerProcess(command, ready_port=port) as lb:
        workers = psutil.Process(lb.pid).children()
        assert len(workers) == 1  # the first worker and one more
        answers = [
            httpx.get(f"http://127.0.0.1:{port}/", headers={"Connection": "close"})
            for _ in range(20)
        ]
        assert {a.text for a in answers} == {f"backend {backend_port}\n"}
        lb.kill()  # the second worker dies with the first (PR_SET_PDEATHSIG)
        assert exited(workers[0])


def exited(process: psutil.Process, timeout: float = 5.0) -> bool:
    """Whether the process is gone (or a zombie nobody reaped) within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if process.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False
