"""The Rich consoles every command prints to: results on stdout, problems on stderr,
progress wherever a terminal is."""

import os
import sys

from rich.console import Console
from rich.live import Live
from rich.spinner import Spinner

# Rich assumes 80 columns when stdout is not a terminal; logs and CI read better wider.
_width = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 120

console = Console(width=_width, log_path=False)
stderr = Console(stderr=True, soft_wrap=True)  # one line per problem, greppable


def progress_console() -> Console:
    """Where progress bars and spinners go: stdout if it is a terminal; else stderr if
    that is one (`sdlab lab run > out.txt` still shows its progress, and the file gets
    the tables only); else stdout, where Rich draws nothing live."""
    if not console.is_terminal and Console(stderr=True).is_terminal:
        return Console(stderr=True, log_path=False)
    return console


def on_stdout(live: Console) -> bool:
    """True if `live` (from `progress_console()`) draws on stdout. A live display there
    may take over `sys.stdout` to keep printed lines above it; on stderr it must not,
    or the results would follow it to stderr."""
    return live is console


def spinner(message: str) -> Live:
    """A spinner with `message` for a wait, drawn where `progress_console()` says;
    gone when the block ends: `with status("starting 5 Redis..."):`."""
    live = progress_console()
    return Live(
        Spinner("dots", message), console=live, transient=True, redirect_stdout=on_stdout(live)
    )
