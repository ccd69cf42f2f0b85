"""`sdlab polling serve` in a process of its own, on a free port: what the tests and the
experiment run, as a user would (two of them on one database make two processes).

    with ServiceProcess(mysql_url, redis_url=redis_url, table="t1") as service:
        httpx.post(f"{service.url}/create/server-1")
        service.kill()                                 # SIGKILL: a crash
"""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Self

import port_for
from mirakuru import HTTPExecutor
from mirakuru.exceptions import ProcessExitedWithError, TimeoutExpired

from sdlab.polling.model import Delays
from sdlab.polling.store import DEFAULT_TABLE


class ServiceFailed(RuntimeError):
    """The service process did not start; the message quotes its output."""


class ServiceProcess:
    """One service process. `start()` returns once it answers HTTP; `stop()` is a
    graceful shutdown (SIGINT, as Ctrl-C), `kill()` a crash (SIGKILL)."""

    def __init__(
        self,
        db_url: str,
        *,
        redis_url: str | None = None,
        channel: str = "auto",
        table: str = DEFAULT_TABLE,
        servers: int = 5,
        delays: Delays | None = None,
        sweep: float = 1.0,
        port: int | None = None,
    ) -> None:
        delays = delays or Delays()
        self.port = port or int(port_for.select_random())
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(tempfile.mkdtemp(prefix="sdlab-polling-")) / "service.log"
        command = [
            sys.executable, "-m", "sdlab", "polling", "serve",
            "--port", str(self.port), "--db", db_url, "--channel", channel,
            "--table", table, "--servers", str(servers), "--sweep", str(sweep),
            "--to-do", str(delays.to_do), "--in-progress", str(delays.in_progress),
        ]  # fmt: skip
        if redis_url:
            command += ["--redis", redis_url]
        self._log_file = self.log.open("wb")
        self._executor = HTTPExecutor(
            command,
            url=f"{self.url}/stats",
            method="GET",
            timeout=60,
            stop_signal=signal.SIGINT,
            expected_returncode=130,  # what `sdlab` exits with on Ctrl-C
            stdout=self._log_file,
            stderr=self._log_file,
        )

    @property
    def pid(self) -> int:
        process = self._executor.process
        if process is None:
            raise RuntimeError("the service is not running")
        return process.pid

    def start(self) -> Self:
        try:
            self._executor.start()
        except (TimeoutExpired, ProcessExitedWithError) as exc:
            self._executor.kill()
            raise ServiceFailed(f"{exc}: {self.output().strip()[-2000:]}") from None
        return self

    def stop(self) -> None:
        self._executor.stop()

    def kill(self) -> None:
        self._executor.kill()

    def running(self) -> bool:
        return self._executor.running()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def close(self) -> None:
        if self._executor.running():
            self._executor.kill()
        self._log_file.close()
        shutil.rmtree(self.log.parent, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
