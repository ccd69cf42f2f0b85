"""HAProxy as a private process, for comparisons: a generated configuration in tcp mode
over the given backends, started in the foreground by this process, never the system
service (Debian's `haproxy` package; `sdlab infra up --install` installs it).

    with HAProxy(9290, ["127.0.0.1:8081", "127.0.0.1:8082"], strategy="round-robin") as lb:
        ...                       # lb.pid for its CPU time; lb.config for what it runs
"""

from __future__ import annotations

import resource
import shutil
import signal
import tempfile
from collections.abc import Sequence
from pathlib import Path

from sdlab.infra.errors import BinaryNotFound
from sdlab.infra.process import ServerProcess

# sdlab.lb's strategy names -> HAProxy's `balance` (and `hash-type`) lines. HAProxy has no
# Maglev; its consistent hash of the source is the nearest.
BALANCE = {
    "round-robin": "balance roundrobin",
    "weighted": "balance roundrobin",  # HAProxy's roundrobin is smooth and weighted
    "least-conn": "balance leastconn",
    "p2c": "balance random(2)",
    "source-hash": "balance source\n    hash-type map-based",
    "ring": "balance source\n    hash-type consistent",
    "maglev": "balance source\n    hash-type consistent",
}


def config_text(
    port: int,
    backends: Sequence[str],
    *,
    strategy: str = "round-robin",
    check: bool = True,
    threads: int | None = None,
    max_connections: int = 20_000,
) -> str:
    """The haproxy.cfg: one `listen` section in tcp mode, checks every 2 s (rise 2,
    fall 3), sdlab.lb's defaults for the timeouts."""
    # HAProxy wants two descriptors a connection and refuses a maxconn it cannot open.
    descriptors = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    max_connections = min(max_connections, (descriptors - 100) // 2)
    threads_line = f"    nbthread {threads}\n" if threads else ""
    check_word = " check" if check else ""
    servers = "\n".join(
        f"    server b{i} {address}{check_word}" for i, address in enumerate(backends, 1)
    )
    return (
        "global\n"
        f"    maxconn {max_connections}\n"
        f"{threads_line}"
        "defaults\n"
        "    mode tcp\n"
        "    timeout connect 3s\n"
        "    timeout client 300s\n"
        "    timeout server 300s\n"
        "    retries 3\n"
        "    option redispatch\n"
        "listen sdlab\n"
        f"    bind 127.0.0.1:{port}\n"
        f"    maxconn {max_connections}\n"
        f"    {BALANCE[strategy]}\n"
        "    default-server inter 2s rise 2 fall 3\n"
        f"{servers}\n"
    )


class HAProxy(ServerProcess):
    """One HAProxy in the foreground (`-db`), ready once its port accepts."""

    def __init__(
        self,
        port: int,
        backends: Sequence[str],
        *,
        strategy: str = "round-robin",
        check: bool = True,
        threads: int | None = None,
    ) -> None:
        binary = shutil.which("haproxy") or (
            "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
        )
        if binary is None:
            raise BinaryNotFound("haproxy", "the Debian package haproxy")
        self.port = port
        self.config = config_text(port, backends, strategy=strategy, check=check, threads=threads)
        self._config_dir = Path(tempfile.mkdtemp(prefix="sdlab-haproxy-"))
        path = self._config_dir / "haproxy.cfg"
        path.write_text(self.config)
        super().__init__(
            [binary, "-db", "-f", str(path)],
            ready_port=port,
            name="haproxy",
            stop_signal=signal.SIGTERM,
        )

    def close(self) -> None:
        try:
            super().close()
        finally:
            shutil.rmtree(self._config_dir, ignore_errors=True)
