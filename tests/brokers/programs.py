"""Programs in processes of their own, read line by line: consumers to kill, tutorials."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class Program:
    """A running program whose stdout lines are read as they come."""

    def __init__(self, process: asyncio.subprocess.Process, argv: tuple[str, ...]) -> None:
        self.process = process
        self.argv = argv
        self.lines: list[str] = []

    @classmethod
    async def start(cls, *argv: str, env: dict[str, str] | None = None) -> Program:
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})},
        )
        return cls(process, argv)

    @classmethod
    async def python(cls, *argv: str, env: dict[str, str] | None = None) -> Program:
        return await cls.start(sys.executable, *argv, env=env)

    @classmethod
    async def sdlab(cls, *argv: str) -> Program:
        return await cls.start(sys.executable, "-m", "sdlab", *argv)

    async def expect(self, text: str, *, timeout: float = 30) -> str:
        """The next line that contains `text`; fails if the program ends or time runs out."""
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.process.stdout.readline()
                if not raw:
                    await self.process.wait()
                    raise AssertionError(
                        f"{self.argv} exited {self.process.returncode} before printing "
                        f"{text!r}; it printed:\n" + "\n".join(self.lines)
                    )
                line = raw.decode().rstrip("\n")
                self.lines.append(line)
                if text in line:
                    return line

    async def finish(self, *, timeout: float = 60) -> int:
        """Read the rest of the output and wait for the exit code."""
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            rest = await self.process.stdout.read()
            self.lines += rest.decode().splitlines()
            return await self.process.wait()

    def kill(self) -> None:
        """SIGKILL: no clean-up, no goodbye to the broker."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        self.kill()
        await self.process.wait()
