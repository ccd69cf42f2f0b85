"""MariaDB (the MySQL family): connect, probe, and run private replication-ready servers."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncmy

from sdlab.infra.service import Launch, Service, find_program, run_setup
from sdlab.pool.connectors import connect_args


async def connect(url: str, **kwargs: Any) -> asyncmy.Connection:
    """Open one asyncmy connection to `url` (autocommit off, as the driver defaults)."""
    return await asyncmy.connect(**connect_args(url), **kwargs)


class MariaDB(Service):
    name = "mysql"
    title = "MariaDB"
    default_port = 3306
    debian_package = "mariadb-server"

    def url_for(self, host: str, port: int) -> str:
        return f"mysql://root@{host}:{port}/"

    async def probe(self, url: str) -> str:
        conn = await connect(url, connect_timeout=3)
        try:
            async with conn.cursor() as cur:
                await cur.execute("SELECT VERSION()")
                (version,) = await cur.fetchone()
            return str(version)
        finally:
            await conn.ensure_closed()

    def programs(self) -> list[str]:
        return [_program("mariadbd"), _program("mariadb-install-db")]

    def prepare(self, datadir: Path, log: Path, *, user: str | None) -> None:
        _tmpdir(datadir).mkdir(parents=True)
        argv = [
            _program("mariadb-install-db"),
            "--no-defaults",
            f"--datadir={datadir}",
            f"--tmpdir={_tmpdir(datadir)}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]
        if os.geteuid() == 0:
            argv.append("--user=root")
        run_setup(self.name, argv, log)

    def launch(self, datadir: Path, port: int, options: Mapping[str, Any]) -> Launch:
        """A server with binary logging on and server_id = port: ready to be a
        replication source or replica without a restart."""
        settings: dict[str, Any] = {
            "datadir": datadir,
            "port": port,
            "bind-address": "127.0.0.1",
            "socket": _socket_path(datadir, port),
            "pid-file": datadir / "mariadbd.pid",
            "tmpdir": _tmpdir(datadir),
            "server-id": port,
            "log-bin": "binlog",
            "binlog-format": "ROW",
            "log-slave-updates": None,
            "skip-name-resolve": None,
            "innodb-buffer-pool-size": "128M",
        }
        if os.geteuid() == 0:
            settings["user"] = "root"
        settings.update(options)
        argv = [_program("mariadbd"), "--no-defaults"]
        for key, value in settings.items():
            argv.append(f"--{key}" if value is None else f"--{key}={value}")
        return Launch(argv)


def _program(name: str) -> str:
    return find_program(name, package=MariaDB.debian_package)


def _tmpdir(datadir: Path) -> Path:
    # Temporary files are named after the server's pid. In a shared /tmp, those a
    # killed server leaves behind collide with a later server that reuses its pid.
    return datadir.parent / "tmp"


def _socket_path(datadir: Path, port: int) -> str:
    # A Unix socket path is limited to 107 bytes; deep checkouts fall back to /tmp.
    inside = datadir / "mysqld.sock"
    return str(inside) if len(str(inside)) < 100 else f"/tmp/sdlab-mariadb-{port}.sock"
