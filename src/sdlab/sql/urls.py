"""Database URLs: which engine, which server, which database, without string surgery.

    mysql://root@127.0.0.1:3306/shop        MariaDB or MySQL (also mariadb://)
    postgresql://postgres@127.0.0.1:5432/shop    (also postgres://; libpq reads ?sslmode=...)
    sqlite:///shop.sqlite3                  a file (sqlite:////abs/path, sqlite:// in memory)

Every change goes through `urlsplit`, so a `?query` and credentials survive it.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from sdlab.sql.errors import UnknownDatabase

Engine = Literal["mariadb", "postgresql", "sqlite"]

_ENGINES: dict[str, Engine] = {
    "mysql": "mariadb",
    "mariadb": "mariadb",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "sqlite": "sqlite",
}
_DEFAULT_PORTS = {"mariadb": 3306, "postgresql": 5432}


def engine_of(url: str) -> Engine:
    """The engine a URL names; `UnknownDatabase` for any other scheme."""
    scheme = urlsplit(url).scheme.split("+")[0].lower()
    try:
        return _ENGINES[scheme]
    except KeyError:
        raise UnknownDatabase(
            f"database URL {redact(url)!r}: use mysql://USER@HOST:PORT/DB (MariaDB, MySQL), "
            "postgresql://USER@HOST:PORT/DB or sqlite:///FILE"
        ) from None


def database_of(url: str) -> str:
    """The database a URL names ('' if none; for SQLite, the file's path)."""
    path = urlsplit(url).path
    if engine_of(url) == "sqlite":
        return path[1:] if path.startswith("/") else path
    return path.strip("/")


def with_database(url: str, name: str) -> str:
    """The same server (credentials, port, query) and another database; for SQLite,
    another file (`name` a path, relative or absolute)."""
    parts = urlsplit(url)
    if engine_of(url) == "sqlite":  # urlunsplit would read //abs/path as a host
        query = f"?{parts.query}" if parts.query else ""
        return f"{parts.scheme}:///{name}{query}"
    return urlunsplit(parts._replace(path=f"/{name}" if name else "/"))


def address_of(url: str) -> str:
    """`host:port` of the server, for messages (never the password)."""
    engine = engine_of(url)
    if engine == "sqlite":
        return database_of(url) or ":memory:"
    parts = urlsplit(url)
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or _DEFAULT_PORTS[engine]}"


def redact(url: str) -> str:
    """The URL with its password replaced by `***`, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))
