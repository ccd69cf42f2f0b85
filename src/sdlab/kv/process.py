"""`sdlab kv serve` in a process of its own: for the benchmark, the crash test and the
docs, which all need a real server they can stop or kill.

    with ServerProcess("sqlite:////tmp/kv.db") as server:
        client = redis.Redis(port=server.resp_port)
        ...
        server.kill()          # SIGKILL: a crash
"""

from __future__ import annotations

import signal
import sys
import tempfile
from pathlib import Path
from typing import IO, Self

import port_for
from mirakuru import TCPExecutor


class ServerProcess:
    """A kv server on free loopback ports, started with mirakuru (which returns once the
    last port it opens, HTTP, accepts connections)."""

    def __init__(
        self,
        backend: str,
        *,
        naive: bool = False,
        http: bool = True,
        extra: list[str] | None = None,
        timeout: float = 60,
    ) -> None:
        self.backend = backend
        self.resp_port = int(port_for.select_random())
        self.http_port = int(port_for.select_random()) if http else 0
        self.log = Path(tempfile.mkstemp(prefix="sdlab-kv-", suffix=".log")[1])
        command = [
            sys.executable, "-m", "sdlab", "kv", "serve",
            "--backend", backend,
            "--resp-port", str(self.resp_port),
            *(["--http-port", str(self.http_port)] if http else ["--no-http"]),
            *(["--naive"] if naive else []),
            *(extra or []),
        ]  # fmt: skip
        self._out: IO[bytes] = self.log.open("wb")
        self._executor = TCPExecutor(
            command,
            host="127.0.0.1",
            port=self.http_port if http else self.resp_port,
            timeout=timeout,
            stdout=self._out,
            stderr=self._out,
        )

    @property
    def pid(self) -> int | None:
        return self._executor.process.pid if self._executor.process else None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def resp_url(self) -> str:
        return f"redis://127.0.0.1:{self.resp_port}/0"

    def start(self) -> Self:
        try:
            self._executor.start()
        except Exception as exc:
            raise RuntimeError(f"kv server failed to start: {exc}\n{self.output()}") from exc
        return self

    def stop(self) -> None:
        """SIGTERM: the server answers the commands it took, commits, and exits."""
        if self._executor.running():
            self._executor.stop(stop_signal=signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: no time to finish anything."""
        if self._executor.running():
            self._executor.kill(wait=True, sig=signal.SIGKILL)

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text(errors="replace")[-4000:]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.stop()
        finally:
            self._out.close()
            self.log.unlink(missing_ok=True)
