"""A server command in a process of its own: ready when it answers, stopped, crashed and
started again, and a failure to start that says why."""

from __future__ import annotations

import signal
import sys

import httpx
import psutil
import pytest

from sdlab.infra.process import ProcessFailed, ServerProcess

# A small HTTP server that says goodbye on SIGTERM and exits 3, so that a graceful stop
# can be told from a kill.
SERVER = """
import http.server, signal, sys
def goodbye(*_):
    print("goodbye", flush=True)
    sys.exit(3)
signal.signal(signal.SIGTERM, goodbye)
print("listening", flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler
                       ).serve_forever()
"""


def test_start_stop_kill_and_start_again(unused_port: int) -> None:
    url = f"http://127.0.0.1:{unused_port}/"
    command = [sys.executable, "-c", SERVER, str(unused_port)]
    with ServerProcess(command, ready_url=url, name="toy", stop_signal=signal.SIGTERM) as toy:
        assert httpx.get(url).status_code == 200  # start() returned once it answered
        first = toy.pid
        assert toy.stop() == 3  # the exit code of a graceful stop
        assert "goodbye" in toy.output()
        assert not toy.running()
        toy.start()
        second = toy.pid
        assert second != first
        toy.kill()
        assert not psutil.pid_exists(second)
        assert not toy.running()
        with pytest.raises(httpx.ConnectError):
            httpx.get(url)
        assert toy.stop() is None  # nothing to stop
        toy.start()  # after a crash too
        assert httpx.get(url).status_code == 200
        log = toy.log
    assert not toy.running()
    assert not log.exists()  # leaving `with` removed the log


def test_a_failed_start_says_why_and_what_it_printed(unused_port: int) -> None:
    command = [sys.executable, "-c", "print('no such setting: frobnicate'); raise SystemExit(2)"]
    server = ServerProcess(command, ready_port=unused_port, name="broken server", timeout=10)
    with pytest.raises(ProcessFailed) as failed:
        server.start()
    assert "broken server did not start: it exited" in str(failed.value)
    assert "no such setting: frobnicate" in str(failed.value)
    server.close()


def test_readiness_is_one_check() -> None:
    with pytest.raises(ValueError, match="ready_url or ready_port"):
        ServerProcess(["true"])
