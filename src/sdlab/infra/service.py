"""A backing service: how to reach one, check that it answers, and run a private one.

Each server sdlab uses (MariaDB, PostgreSQL, Redis, RabbitMQ, a Kafka-protocol broker)
is one `Service` subclass in a module of its own. The subclass knows three things:
its URL shape, a real protocol probe (which returns the server's version), and how
to initialise a data directory and launch the server from the installed binaries.
"""

from __future__ import annotations

import asyncio
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit

from sdlab.failure import describe as describe  # re-exported: infra.service.describe
from sdlab.infra.errors import BinaryNotFound, StartFailed

T = TypeVar("T")

Origin = Literal["env", "local", "managed"]
"""Where an endpoint came from: an `SDLAB_*_URL` variable, the usual local port, or a
private instance that sdlab started and manages under its state directory."""


@dataclass(frozen=True)
class Endpoint:
    """The address of one reachable backing service."""

    service: str
    url: str
    origin: Origin
    version: str = ""

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return _port_of(self.url)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Launch:
    """How to run a server: its argv, extra environment, and the user to run it as."""

    argv: list[str]
    env: Mapping[str, str] = field(default_factory=dict)
    user: str | None = None


class Service(ABC):
    """One kind of backing server."""

    name: ClassVar[str]
    """Short key: `mysql`, `postgres`, ...; also names the `SDLAB_<NAME>_URL` variable."""
    title: ClassVar[str]
    default_port: ClassVar[int]
    debian_package: ClassVar[str | None] = None
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    start_timeout: ClassVar[float] = 30.0

    @property
    def env_var(self) -> str:
        return f"SDLAB_{self.name.upper()}_URL"

    @property
    def default_url(self) -> str:
        return self.url_for("127.0.0.1", self.default_port)

    @abstractmethod
    def url_for(self, host: str, port: int) -> str:
        """The URL of a server of this kind listening on host:port."""

    @abstractmethod
    async def probe(self, url: str) -> str:
        """Speak the service's protocol to `url`; return the server's version."""

    @abstractmethod
    def prepare(self, datadir: Path, log: Path, *, user: str | None) -> None:
        """Initialise an empty data directory for a private instance."""

    @abstractmethod
    def launch(self, datadir: Path, port: int, options: Mapping[str, Any]) -> Launch:
        """The command that runs a private instance on 127.0.0.1:port."""

    def programs(self) -> list[str]:
        """The installed programs a private instance needs (raises BinaryNotFound)."""
        return []

    def run_as(self) -> str | None:
        """The user a private instance runs as (None: the current user)."""
        return None

    async def check(self, url: str, timeout: float = 3.0) -> str:
        """Probe `url` within `timeout` seconds; return the version or raise.

        A plain TCP connect comes first so that an absent server gets the same
        short reason ("connection refused") whatever the client library says.
        """
        async with asyncio.timeout(timeout):
            host, port = urlsplit(url).hostname or "127.0.0.1", _port_of(url)
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            return await self.probe(url)


def _port_of(url: str) -> int:
    parts = urlsplit(url)
    if parts.port is None:
        raise ValueError(f"{url!r} has no port")
    return parts.port


def run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, even inside a running event loop."""

    async def main() -> T:
        return await make()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    with ThreadPoolExecutor(1, thread_name_prefix="sdlab-sync") as pool:
        return pool.submit(asyncio.run, main()).result()


def find_program(name: str, *patterns: str, package: str | None = None) -> str:
    """Find an installed program on PATH, in sbin, or in versioned folders (newest first)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    if found:
        return found
    for pattern in patterns:
        candidates = sorted(glob.glob(pattern), key=_version_key, reverse=True)
        for candidate in candidates:
            if os.access(candidate, os.X_OK):
                return candidate
    how = (
        f"install the Debian package {package!r} (`sdlab infra up --install` does, as root)"
        if package
        else "install it"
    )
    raise BinaryNotFound(name, how)


def _version_key(path: str) -> list[int]:
    return [int(part) for part in path.replace("/", ".").split(".") if part.isdigit()]


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    """True if something accepts TCP connections on host:port."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


_ERROR_LINE = re.compile(r"\[ERROR\]|\bERROR\b|\bFATAL\b|\bPANIC\b|[Ee]rror:|\bfailed\b")


def log_excerpt(log: Path, errors: int = 12, last: int = 8) -> str:
    """A failed server's log, shortened: its error lines, then its last lines."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    picked = [i for i, line in enumerate(lines) if _ERROR_LINE.search(line)][:errors]
    picked += range(max(0, len(lines) - last), len(lines))
    shown, previous = [], -1
    for i in sorted(set(picked)):
        if previous >= 0 and i > previous + 1:
            shown.append("...")
        shown.append(lines[i])
        previous = i
    return "\n".join(shown)


def run_setup(service: str, argv: list[str], log: Path, *, user: str | None = None) -> None:
    """Run a one-off set-up program (initdb, mariadb-install-db) into `log`."""
    with log.open("ab") as out:
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, user=user, check=False)
    if done.returncode != 0:
        name = Path(argv[0]).name
        raise StartFailed(service, f"{name} exited with {done.returncode}", log_excerpt(log))
