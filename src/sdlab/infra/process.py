"""A server command in a process of its own: what tests, experiments and docs run when
they need a real server to stop, crash and start again, as a user would run it.

    command = sdlab_command("kv", "serve", "--resp-port", "6390", "--no-http")
    with ServerProcess(command, ready_port=6390, name="kv server") as kv:
        ...
        kv.kill()          # SIGKILL: a crash
        kv.start()         # the same command again; returns once it answers
        kv.stop()          # Ctrl-C (SIGINT, or `stop_signal`); returns the exit code

Start-up goes through mirakuru, like the private instances (`instance.py`): the process
runs in a session of its own, and `start()` returns once its readiness check passes (an
HTTP URL that answers 2xx, or a loopback port that accepts a connection), or raises
`ProcessFailed` quoting what the process printed. Its standard output and error go to
one log file, `output()`.
"""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Self

from mirakuru import HTTPExecutor, SimpleExecutor, TCPExecutor
from mirakuru.exceptions import ProcessExitedWithError, ProcessFinishedWithError, TimeoutExpired

from sdlab.infra.errors import InfraError


def sdlab_command(*args: str) -> list[str]:
    """`sdlab ARGS...` as this interpreter runs it (no PATH lookup, the same virtualenv)."""
    return [sys.executable, "-m", "sdlab", *args]


class ProcessFailed(InfraError):
    """A server process did not start; says which, why, and the end of what it printed."""

    def __init__(self, name: str, reason: str, output: str) -> None:
        super().__init__(name, reason, output)
        self.name, self.reason, self.output = name, reason, output

    def __str__(self) -> str:
        text = f"{self.name} did not start: {self.reason}"
        return f"{text}\n--- what it printed ---\n{self.output}" if self.output else text


class ServerProcess:
    """One server process. `start()` returns once it is ready; `stop()` is a graceful
    shutdown (`stop_signal`, Ctrl-C by default), `kill()` a crash (SIGKILL); either may
    be followed by `start()` again. Leaving `with` stops it and removes its log."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        ready_url: str | None = None,
        ready_port: int | None = None,
        name: str | None = None,
        stop_signal: int = signal.SIGINT,
        timeout: float = 60,
    ) -> None:
        """ready_url: ready once a GET of it answers 2xx; ready_port: once 127.0.0.1:port
        accepts a connection (give one). timeout: seconds to wait for readiness, and for
        a graceful stop before it becomes a kill."""
        if (ready_url is None) == (ready_port is None):
            raise ValueError("give ready_url or ready_port (one of them)")
        self.command = list(command)
        self.name = name or " ".join(self.command)
        self.stop_signal = stop_signal
        self._home = Path(tempfile.mkdtemp(prefix="sdlab-process-"))
        self.log = self._home / "output.log"
        self._out: IO[bytes] = self.log.open("wb")
        self._executor: SimpleExecutor
        if ready_url is not None:
            self._executor = HTTPExecutor(
                self.command,
                url=ready_url,
                method="GET",
                timeout=timeout,
                stdout=self._out,
                stderr=self._out,
            )
        else:
            self._executor = TCPExecutor(
                self.command,
                host="127.0.0.1",
                port=int(ready_port or 0),
                timeout=timeout,
                stdout=self._out,
                stderr=self._out,
            )

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running() else "not running"
        return f"ServerProcess({self.name!r}, {state})"

    @property
    def pid(self) -> int:
        process = self._executor.process
        if process is None:
            raise RuntimeError(f"{self.name} is not running")
        return process.pid

    def running(self) -> bool:
        return self._executor.running()

    def start(self) -> Self:
        """Start the command; return once it is ready (ProcessFailed if it is not)."""
        try:
            self._executor.start()
        except (TimeoutExpired, ProcessExitedWithError) as exc:
            self._executor.kill()
            reason = (
                "it exited"
                if isinstance(exc, ProcessExitedWithError)
                else f"not ready within {exc.timeout} s"
            )
            raise ProcessFailed(self.name, reason, self.output().strip()[-2000:]) from None
        return self

    def stop(self) -> int | None:
        """Send `stop_signal`, wait for the process to exit (killing it after `timeout`),
        and return its exit code (None if it was not running)."""
        process = self._executor.process
        if process is None or not self.running():
            self._executor.kill()  # forget a process that ended by itself
            return None if process is None else process.returncode
        try:
            self._executor.stop(stop_signal=self.stop_signal, expected_returncode=0)
        except ProcessFinishedWithError as exc:
            return exc.exit_code
        return 0

    def kill(self) -> None:
        """SIGKILL to the process and its children: no time to finish anything."""
        self._executor.kill(sig=signal.SIGKILL)

    def output(self) -> str:
        """What the process printed so far (standard output and error)."""
        self._out.flush()
        return self.log.read_text(errors="replace")

    def close(self) -> None:
        """Stop the process if it runs (gracefully, as `stop()`), and remove its log."""
        try:
            self.stop()
        finally:
            self._out.close()
            shutil.rmtree(self._home, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.close()
