"""One load balancer put together from its configuration: the pool of backends, the
proxy that listens, and the health checker.

    async with Balancer(config) as balancer:       # listening, checks running
        balancer.port, balancer.pool.eligible()
    # leaving: stop accepting, open connections finish (up to drain_timeout), checks stop
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Self

from sdlab.lb.backends import Pool
from sdlab.lb.config import Config
from sdlab.lb.health import Check, HealthChecker
from sdlab.lb.proxy import Proxy
from sdlab.lb.strategies import make


class Balancer:
    def __init__(self, config: Config) -> None:
        self.config = config
        listen = config.listen
        self.pool = Pool(make(listen.strategy), slow_start=listen.slow_start)
        for address, entry in zip(config.addresses(), config.backend, strict=True):
            self.pool.add(address, entry.weight)
        self.proxy = Proxy(
            self.pool,
            connect_timeout=listen.connect_timeout,
            idle_timeout=listen.idle_timeout,
            max_connections=listen.max_connections,
            send_proxy=listen.send_proxy,
        )
        health = config.health
        self.checker = HealthChecker(
            self.pool,
            Check(
                kind=health.check,
                interval=health.interval,
                timeout=health.timeout,
                rise=health.rise,
                fall=health.fall,
                path=health.path,
                expect=health.expect,
            ),
        )
        self.port = 0
        self._checks: asyncio.Task[None] | None = None

    async def start(self, *, reuse_port: bool = False) -> Self:
        """Listen, and start the checks (the first round runs before any connection is
        served, so a backend that is already down gets no client)."""
        if self.checker.check.kind != "none":
            await self.checker.check_all()
        self.port = await self.proxy.listen(
            self.config.listen.host, self.config.listen.port, reuse_port=reuse_port
        )
        self._checks = asyncio.create_task(self.checker.run())
        return self

    async def close(self, timeout: float | None = None) -> int:
        """Stop accepting, let open connections finish for `timeout` seconds (the
        configured drain_timeout by default), stop the checks; return connections cut."""
        drain = self.config.listen.drain_timeout if timeout is None else timeout
        cut = await self.proxy.shutdown(drain)
        if self._checks is not None:
            self._checks.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checks
        return cut

    def status(self) -> dict[str, Any]:
        listen = self.config.listen
        return {
            "listen": f"{listen.host}:{self.port}",
            "strategy": self.pool.strategy.name,
            "promise": self.pool.strategy.promise,
            "active": self.proxy.active,
            "waiting": len(self.proxy.waiting),
            **self.proxy.stats.as_dict(),
        }

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
