"""Helpers shared by the tests."""

from __future__ import annotations

import os
import subprocess
import sys


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
