"""What every `sdlab` command line shares: one word per thing, and one error path.

The vocabulary (docs/infra.md keeps the table):

    --db URL        the SQL database a command uses (`mysql`, `postgres`: the server
                    sdlab finds; kv also `sqlite`), repeatable where it takes several
    --broker URL    the message broker (amqp://..., kafka://...)
    --redis URL     a Redis server
    --host, --port  where a service listens; a second port is named by what it serves
                    (--http-port, --admin-port)
    --service-url   the running sdlab service a client command talks to

Old spellings keep working through `respelled()`: a command class that rewrites them
to the new ones before parsing and says so in one line on stderr. They are not
options, so `--help` never shows them.

Every failure to reach a server ends the same way, whichever driver raised it and
wherever the address came from: `sdlab: cannot reach <service> at <address>: <cause>`,
exit 1 (`unreachable()` finds the three in the exception, `fail()` prints it).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn

import typer
from typer.core import TyperCommand

from sdlab.console import stderr
from sdlab.failure import describe

# -- the old spellings ------------------------------------------------------------------


def warn_renamed(old: str, new: str) -> None:
    """The one-line warning an old spelling gets."""
    stderr.print(f"warning: {old} is deprecated, use {new}", highlight=False)


def respell(args: list[str], renames: dict[str, str]) -> list[str]:
    """`args` with each old option name (`--backend`, `--backend=X`, `-b`) replaced by
    its new one, warning once per old name; nothing after `--` is touched."""
    out: list[str] = []
    warned: set[str] = set()
    for i, arg in enumerate(args):
        if arg == "--":
            out += args[i:]
            break
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        new = renames.get(name)
        if new is None:
            out.append(arg)
            continue
        if name not in warned:
            warn_renamed(name, new)
            warned.add(name)
        out.append(new + eq + value)
    return out


class _Respelled(TyperCommand):
    renames: ClassVar[dict[str, str]] = {}

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, respell(args, self.renames))


def respelled(renames: dict[str, str]) -> type[TyperCommand]:
    """A command class that still takes `renames`' old option names, hidden:

    @app.command(cls=respelled({"--backend": "--db"}))
    """
    return type("Respelled", (_Respelled,), {"renames": dict(renames)})


# -- the shared options -----------------------------------------------------------------

SHORTHANDS = {
    "mysql": "mysql",
    "mariadb": "mysql",
    "postgres": "postgres",
    "postgresql": "postgres",
}
DB_METAVAR = "mysql|postgres|URL"


def db_option(help: str, *, metavar: str = DB_METAVAR) -> Any:
    """`--db`: the SQL database a command uses."""
    return typer.Option("--db", metavar=metavar, help=help)


def broker_option(help: str) -> Any:
    """`--broker`: the message broker a command uses."""
    return typer.Option("--broker", metavar="URL", help=help)


def port_option(help: str = "Port to listen on.") -> Any:
    return typer.Option("--port", min=1, max=65535, help=help)


def host_option(help: str = "Address to listen on.") -> Any:
    return typer.Option("--host", help=help)


def service_url_option(system: str) -> Any:
    return typer.Option("--service-url", metavar="URL", help=f"The running `sdlab {system} serve`.")


def database_url(value: str, database: str, *, postgres_database: str | None = None) -> str:
    """The URL `--db VALUE` means: `mysql` or `postgres` (also `mariadb`, `postgresql`)
    is the server sdlab finds (`sdlab.infra`), with `database` in it (`postgres_database`
    on PostgreSQL, if given); anything else is a URL, returned as given once its engine
    is known (sdlab.sql.UnknownDatabase, a ValueError, otherwise)."""
    from sdlab import infra, sql

    service = SHORTHANDS.get(value.lower())
    if service is not None:
        server = infra.up([service])[service].url
        name = postgres_database if service == "postgres" and postgres_database else database
        return sql.with_database(server, name)
    sql.engine_of(value)
    return value


# -- the one error path -----------------------------------------------------------------


@dataclass(frozen=True)
class Unreachable:
    """A server a command could not reach."""

    service: str
    address: str
    cause: str
    hint: str = ""

    def __str__(self) -> str:
        line = f"cannot reach {self.service} at {self.address}: {self.cause}"
        return f"{line}; {self.hint}" if self.hint else line


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what caused it, depth first, exception groups' members too."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        if isinstance(e, BaseExceptionGroup):
            todo[:0] = list(e.exceptions)
        # A suppressed context is still the cause (httpcore raises its ConnectError
        # `from None` over the socket's error).
        following = e.__cause__ or e.__context__
        if following is not None:
            todo.insert(0, following)


def root_cause(exc: BaseException) -> str:
    """The one-line cause at the bottom of `exc`'s chain: the socket's error if there is
    one (`connection refused (nothing listens there)`), else `exc` described."""
    for e in _chain(exc):
        if isinstance(e, OSError) and (e.errno is not None or isinstance(e, TimeoutError)):
            return describe(e)
    return describe(exc)


def _driver(name: str) -> Any:
    """A driver's module if this process loaded it (checked without importing it)."""
    return sys.modules.get(name)


def unreachable(exc: BaseException, *, system: str | None = None) -> Unreachable | None:
    """The server `exc` says could not be reached, if it says so.

    Named errors carry `service`, `address` and `reason` (sdlab.infra's
    ServiceUnreachable, sdlab.sql's DatabaseUnavailable, the brokers' BrokerUnavailable,
    polling's ChannelUnavailable); httpx's connect errors carry their request's URL, and
    are named after the sdlab `system` whose service it is."""
    for e in _chain(exc):
        service, address = getattr(e, "service", None), getattr(e, "address", None)
        if isinstance(service, str) and isinstance(address, str) and service and address:
            reason = getattr(e, "reason", None)
            cause = reason if isinstance(reason, str) and reason else root_cause(e)
            return Unreachable(service, address, cause, getattr(e, "hint", "") or "")
        httpx = _driver("httpx")
        if httpx is not None and isinstance(e, httpx.TransportError | httpx.TimeoutException):
            try:
                url = e.request.url
            except RuntimeError:  # no request attached: nothing to name
                continue
            if not isinstance(e, httpx.ConnectError | httpx.ConnectTimeout):
                continue
            name = f"the {system} service" if system else "the service"
            return Unreachable(name, f"{url.host}:{url.port}", root_cause(e))
    return None


def message(exc: BaseException, *, system: str | None = None) -> str:
    """The one line a command prints for `exc`: the unreachable server, or the error."""
    found = unreachable(exc, system=system)
    return f"sdlab: {found}" if found else f"error: {exc}"


def fail(exc: BaseException, *, system: str | None = None) -> NoReturn:
    """Print `exc` as one line on stderr and exit 1."""
    if unreachable(exc, system=system):
        stderr.print(message(exc, system=system), highlight=False)
    else:
        stderr.print(f"[red]error:[/] {exc}", highlight=False)
    raise typer.Exit(1)
