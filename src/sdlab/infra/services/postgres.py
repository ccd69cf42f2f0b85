"""PostgreSQL: connect, probe, and run private servers."""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg

from sdlab.infra.service import Launch, Service, find_program, run_setup


async def connect(url: str, **kwargs: Any) -> psycopg.AsyncConnection:
    """Open one psycopg 3 async connection to a `postgresql://` URL."""
    return await psycopg.AsyncConnection.connect(url, **kwargs)


class PostgreSQL(Service):
    name = "postgres"
    title = "PostgreSQL"
    default_port = 5432
    debian_package = "postgresql"
    # SIGTERM is a "smart" shutdown that waits for every client to leave; SIGINT
    # is the "fast" one: roll back open transactions and stop.
    stop_signal = signal.SIGINT

    def url_for(self, host: str, port: int) -> str:
        return f"postgresql://postgres@{host}:{port}/postgres"

    async def probe(self, url: str) -> str:
        async with await connect(url, connect_timeout=3) as conn:
            major, minor = divmod(conn.info.server_version, 10_000)
            return f"{major}.{minor}"

    def programs(self) -> list[str]:
        return [_program("postgres"), _program("initdb")]

    def run_as(self) -> str | None:
        # initdb and postgres refuse to run as root; the Debian package's user will do.
        return "postgres" if os.geteuid() == 0 else None

    def prepare(self, datadir: Path, log: Path, *, user: str | None) -> None:
        argv = [
            _program("initdb"),
            "-D",
            str(datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ]
        run_setup(self.name, argv, log, user=user)

    def launch(self, datadir: Path, port: int, options: Mapping[str, Any]) -> Launch:
        settings: dict[str, Any] = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": "",  # TCP only: no socket path length limits
            "max_connections": 200,
        }
        settings.update(options)
        argv = [_program("postgres"), "-D", str(datadir), "-p", str(port)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return Launch(argv, user=self.run_as())


def _program(name: str) -> str:
    # Debian keeps the server programs out of PATH, one folder per major version.
    return find_program(
        name, f"/usr/lib/postgresql/*/bin/{name}", package=PostgreSQL.debian_package
    )
