"""The Rich consoles every command prints to: results on stdout, problems on stderr."""

import os
import sys

from rich.console import Console

# Rich assumes 80 columns when stdout is not a terminal; logs and CI read better wider.
_width = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 120

console = Console(width=_width, log_path=False)
stderr = Console(stderr=True, soft_wrap=True)  # one line per problem, greppable
