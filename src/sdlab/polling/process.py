"""`sdlab polling serve` in a process of its own, on a free port: what the tests and the
experiment run, as a user would (two of them on one database make two processes).

    with ServiceProcess(mysql_url, redis_url=redis_url, table="t1") as service:
        httpx.post(f"{service.url}/create/server-1")
        service.kill()                                 # SIGKILL: a crash
"""

from __future__ import annotations

import port_for

from sdlab.infra.process import ServerProcess, sdlab_command
from sdlab.polling.model import Delays
from sdlab.polling.store import DEFAULT_TABLE


class ServiceProcess(ServerProcess):
    """One service process; ready once it answers HTTP. `stop()` is Ctrl-C (held polls
    are answered 503 and the process exits 130), `kill()` a crash."""

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
        command = sdlab_command(
            "polling", "serve",
            "--port", str(self.port), "--db", db_url, "--channel", channel,
            "--table", table, "--servers", str(servers), "--sweep", str(sweep),
            "--to-do", str(delays.to_do), "--in-progress", str(delays.in_progress),
            *(["--redis", redis_url] if redis_url else []),
        )  # fmt: skip
        super().__init__(command, ready_url=f"{self.url}/stats", name="polling service")
