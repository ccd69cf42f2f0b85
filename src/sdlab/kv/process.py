"""`sdlab kv serve` in a process of its own: for the benchmark, the crash test and the
docs, which all need a real server they can stop or kill.

    with ServerProcess("sqlite:////tmp/kv.db") as server:
        client = redis.Redis(port=server.resp_port)
        ...
        server.kill()          # SIGKILL: a crash
"""

from __future__ import annotations

import signal

import port_for

from sdlab.infra.process import ServerProcess as _ServerProcess
from sdlab.infra.process import sdlab_command


class ServerProcess(_ServerProcess):
    """A kv server on free loopback ports; ready once the last port it opens (HTTP, or
    the Redis protocol's with `http=False`) accepts connections. `stop()` is SIGTERM:
    the server commits what is queued, answers what it took, and exits."""

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
        command = sdlab_command(
            "kv", "serve", "--backend", backend, "--resp-port", str(self.resp_port),
            *(["--http-port", str(self.http_port)] if http else ["--no-http"]),
            *(["--naive"] if naive else []),
            *(extra or []),
        )  # fmt: skip
        super().__init__(
            command,
            ready_port=self.http_port or self.resp_port,
            name="kv server",
            stop_signal=signal.SIGTERM,
            timeout=timeout,
        )

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def resp_url(self) -> str:
        return f"redis://127.0.0.1:{self.resp_port}/0"
