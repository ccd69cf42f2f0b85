"""Redis: connect, probe, and run private servers (nothing kept on disk by default)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from sdlab.infra.service import Launch, Service, find_program


def connect(url: str, **kwargs: Any) -> aioredis.Redis:
    """A redis-py asyncio client for a `redis://` URL (it connects on first use)."""
    return aioredis.from_url(url, **kwargs)


class Redis(Service):
    name = "redis"
    title = "Redis"
    default_port = 6379
    debian_package = "redis-server"
    start_timeout = 15.0

    def url_for(self, host: str, port: int) -> str:
        return f"redis://{host}:{port}/0"

    async def probe(self, url: str) -> str:
        client = connect(url, socket_connect_timeout=3)
        try:
            info = await client.info("server")
            return str(info["redis_version"])
        finally:
            await client.aclose()

    def programs(self) -> list[str]:
        return [find_program("redis-server", package=self.debian_package)]

    def prepare(self, datadir: Path, log: Path, *, user: str | None) -> None:
        datadir.mkdir(parents=True)

    def launch(self, datadir: Path, port: int, options: Mapping[str, Any]) -> Launch:
        settings: dict[str, Any] = {
            "port": port,
            "bind": "127.0.0.1",
            "dir": datadir,
            "save": "",  # no snapshots unless asked: a private instance is scratch space
            "appendonly": "no",
            "daemonize": "no",
        }
        settings.update(options)
        argv = self.programs()
        for key, value in settings.items():
            argv += [f"--{key}", str(value)]
        return Launch(argv)
