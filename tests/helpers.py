"""Helpers shared by the tests."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def sdlab(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the `sdlab` command line as a user would, in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "sdlab", *args],
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def eventually(probe: Callable[[], Awaitable[T]], expected: T, timeout: float = 5.0) -> T:
    """Poll `probe` until it returns `expected` or `timeout` passes; return its last value.

    For facts a server updates asynchronously (a closed connection's backend exits a
    few milliseconds after the client hangs up)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value == expected or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.02)
