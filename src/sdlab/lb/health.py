"""Active health checks: every `interval` seconds each backend is probed, by a TCP
connect or an HTTP GET that must answer `expect`; `fall` failures in a row take an up
backend down, `rise` successes in a row bring a down one back (HAProxy's `inter`,
`fall`, `rise`).

    checker = HealthChecker(pool, Check(kind="http", path="/", interval=2, rise=2, fall=3))
    task = asyncio.create_task(checker.run())

Passive checks live in the proxy: a refused or timed-out connect marks the backend down
at once and leaves a failure in its streak, so it needs `rise` good checks to return.
A draining backend is still checked (its state stays `draining`); a check never takes
the last backends down faster than `fall` allows.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Literal

from sdlab.lb.backends import Address, Backend, Pool, State

CheckKind = Literal["tcp", "http", "none"]


@dataclass(frozen=True)
class Check:
    """How backends are probed."""

    kind: CheckKind = "tcp"
    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 3
    path: str = "/"
    expect: int = 200


class CheckFailed(Exception):
    """One probe's failure, in words."""


async def probe(address: Address, check: Check) -> None:
    """One probe of a backend; raises CheckFailed saying why it failed."""
    writer = None
    try:
        async with asyncio.timeout(check.timeout):
            reader, writer = await asyncio.open_connection(address.host, address.port)
            if check.kind == "http":
                writer.write(
                    f"GET {check.path} HTTP/1.1\r\nHost: {address}\r\n"
                    "User-Agent: sdlab-lb-check\r\nConnection: close\r\n\r\n".encode()
                )
                line = await reader.readline()
                parts = line.split(b" ", 2)
                if len(parts) < 2 or not parts[1].isdigit():
                    raise CheckFailed(f"HTTP check: not a status line: {line[:60]!r}")
                if int(parts[1]) != check.expect:
                    raise CheckFailed(f"HTTP check: status {int(parts[1])}, not {check.expect}")
    except TimeoutError:
        raise CheckFailed(f"{check.kind} check timed out after {check.timeout:g} s") from None
    except OSError as exc:
        raise CheckFailed(f"{check.kind} check: {exc.strerror or exc}") from None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class HealthChecker:
    """Probes every backend of a pool on a schedule and moves it up or down."""

    def __init__(self, pool: Pool, check: Check) -> None:
        self.pool = pool
        self.check = check

    async def run(self) -> None:
        """Check every `interval` until cancelled. With checks off (`none`), a backend a
        failed connect took down is simply tried again after `interval`."""
        while self.check.kind == "none":
            await asyncio.sleep(self.check.interval)
            for backend in self.pool:
                self.pool.mark_up(backend, "tried again: checks are off")
        while True:
            await self.check_all()
            await asyncio.sleep(self.check.interval)

    async def check_all(self) -> None:
        backends = list(self.pool)
        await asyncio.gather(*(self.check_one(b) for b in backends))

    async def check_one(self, backend: Backend) -> None:
        try:
            await probe(backend.address, self.check)
        except CheckFailed as exc:
            backend.checks_failed += 1
            backend.streak = min(backend.streak, 0) - 1
            if backend.state is State.UP and -backend.streak >= self.check.fall:
                self.pool.mark_down(backend, str(exc))
            elif backend.state is State.DOWN:
                backend.reason = str(exc)
            return
        backend.checks_ok += 1
        backend.streak = max(backend.streak, 0) + 1
        if backend.state is State.DOWN and backend.streak >= self.check.rise:
            self.pool.mark_up(backend, f"{self.check.kind} check passed {backend.streak} times")
