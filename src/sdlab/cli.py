"""`sdlab`: the one command line. Each system adds a sub-command group of its own."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from sdlab import __version__, frontend, lab, systems
from sdlab.config import ConfigError
from sdlab.console import stderr
from sdlab.infra.errors import InfraError

app = typer.Typer(
    name="sdlab",
    help="Thirteen system-design building blocks, made real and measured on real servers.\n\n"
    "Start with `sdlab infra status` (which servers answer), then `sdlab lab run --quick` "
    "(every experiment, small) or `sdlab <system> --help`.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(lab.app, name="lab")
for module in systems.modules("cli"):
    name = module.__name__.split(".")[1]
    app.add_typer(module.app, name=name)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sdlab {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Thirteen system-design building blocks, made real and measured on real servers."""


def main() -> None:
    """Entry point: known failures are one line on stderr, not a traceback. A server
    that cannot be reached, whichever driver found out and wherever its address came
    from, is `sdlab: cannot reach <service> at <address>: <cause>` (sdlab.frontend)."""
    system = sys.argv[1] if len(sys.argv) > 1 else None
    try:
        app()
    except KeyboardInterrupt:
        stderr.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        if frontend.unreachable(exc, system=system) is None and not isinstance(
            exc, ConfigError | InfraError
        ):
            raise
        stderr.print(frontend.message(exc, system=system), highlight=False)
        sys.exit(1)
