"""Progress goes where a terminal is: `sdlab lab run > results.txt` still shows its
bars on stderr, and the file gets the tables only."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from dataclasses import dataclass
    from pathlib import Path
    from sdlab import lab
    from sdlab.bench import Bench, Experiment, Outcome, register

    @register
    @dataclass
    class Ticks(Experiment):
        \"\"\"A few sleeps, each a step of a progress bar.\"\"\"
        name = "ticks"
        system = "docs"
        title = "ticks"

        async def run(self, bench: Bench) -> Outcome:
            with bench.progress("ticking away", total=20) as advance:
                for _ in range(20):
                    await asyncio.sleep(0.05)
                    advance()
            return Outcome([{"ticks": 20, "measured (ms)": 1000}])

    lab.run([Ticks()], quick=True, out=Path(sys.argv[1]))
""")


def run_with_stderr_on_a_terminal(tmp_path: Path, stdout_is_a_file: bool) -> tuple[str, str]:
    """(stdout, what the terminal on stderr showed)."""
    controller, terminal = pty.openpty()
    out = tmp_path / "stdout.txt"
    with out.open("w") as stdout:
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(tmp_path / "report")],
            stdout=stdout if stdout_is_a_file else terminal,
            stderr=terminal,
            env={k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR")},
            timeout=120,
            check=False,
        )
    os.close(terminal)
    shown = b""
    try:
        while chunk := os.read(controller, 65536):
            shown += chunk
    except OSError:  # EIO: the terminal's other end is closed and drained
        pass
    os.close(controller)
    assert done.returncode == 0, shown.decode(errors="replace")
    return out.read_text(), shown.decode(errors="replace")


def test_progress_goes_to_stderr_when_only_stdout_is_redirected(tmp_path: Path) -> None:
    stdout, terminal = run_with_stderr_on_a_terminal(tmp_path, stdout_is_a_file=True)
    assert "ticking away" in terminal  # the bar, drawn on the terminal
    assert "ticking away" not in stdout
    assert "measured" in stdout  # the table, in the file
    assert "report:" in stdout
    assert "measured" not in terminal


def test_progress_stays_on_stdout_when_it_is_the_terminal(tmp_path: Path) -> None:
    stdout, terminal = run_with_stderr_on_a_terminal(tmp_path, stdout_is_a_file=False)
    assert stdout == ""
    assert "ticking away" in terminal
    assert "measured" in terminal
