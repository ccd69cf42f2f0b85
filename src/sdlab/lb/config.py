"""The load balancer's configuration: a TOML file, flags over it, checked before anything
starts. A bad file is refused with the line that is wrong.

    [listen]
    port = 9090
    strategy = "least-conn"      # round-robin weighted least-conn p2c source-hash ring maglev

    [health]
    check = "http"               # tcp (default), http, none
    path = "/"

    [[backend]]
    address = "127.0.0.1:8081"
    weight = 2

    config = load(Path("lb.toml"), overrides={"listen": {"port": 9191}})

Errors are `ConfigError("lb.toml, line 7: listen.strategy: no strategy called 'fast'
...")`: TOML syntax errors carry tomllib's line; errors of meaning are found on the line
that sets the key (TOML's own parser keeps no positions).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sdlab.lb.backends import Address
from sdlab.lb.strategies import STRATEGIES


class ConfigError(ValueError):
    """A configuration that cannot be used; says where and why."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Listen(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=9090, ge=0, le=65535)
    strategy: str = "round-robin"
    max_connections: int = Field(default=10_000, ge=1)
    connect_timeout: float = Field(default=3.0, gt=0)
    idle_timeout: float = Field(default=300.0, gt=0)
    drain_timeout: float = Field(default=30.0, ge=0)
    """At shutdown, seconds open connections get to finish before they are cut."""
    send_proxy: Literal[1, 2] | None = None
    """Send the PROXY protocol header (version 1 or 2) to backends."""
    slow_start: float = Field(default=0.0, ge=0)
    workers: int = Field(default=1, ge=1, le=64)
    """Processes sharing the port (SO_REUSEPORT), each with its own pool state."""

    @field_validator("strategy")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in STRATEGIES:
            raise ValueError(f"no strategy called {value!r}; known: {', '.join(STRATEGIES)}")
        return value


class Admin(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=9091, ge=0, le=65535)
    enabled: bool = True


class Health(_Section):
    check: Literal["tcp", "http", "none"] = "tcp"
    interval: float = Field(default=2.0, gt=0)
    timeout: float = Field(default=1.0, gt=0)
    rise: int = Field(default=2, ge=1)
    fall: int = Field(default=3, ge=1)
    path: str = "/"
    expect: int = Field(default=200, ge=100, le=599)


class BackendEntry(_Section):
    address: str
    weight: int = Field(default=1, ge=1, le=1000)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return str(Address.parse(value))


class Config(_Section):
    listen: Listen = Field(default_factory=Listen)
    admin: Admin = Field(default_factory=Admin)
    health: Health = Field(default_factory=Health)
    backend: list[BackendEntry] = Field(default_factory=list)

    def addresses(self) -> list[Address]:
        return [Address.parse(b.address) for b in self.backend]


def load(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """The configuration in `path` (defaults if None) with `overrides` (the flags, as
    {"listen": {"port": 9191}, "backend": [...]}) over it."""
    text = ""
    data: dict[str, Any] = {}
    where = str(path) if path else "flags"
    if path is not None:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{path}: {exc.strerror}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            message = str(exc)
            if at := _AT.search(message):  # "... (at line 3, column 12)": the line first
                message = f"line {at[1]}: {message[: at.start()]} (column {at[2]})"
            raise ConfigError(f"{path}, {message}") from None
    for section, values in (overrides or {}).items():
        if isinstance(values, dict):
            data.setdefault(section, {}).update(values)
        else:
            data[section] = values
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        location = error["loc"]
        line = _line_of(text, location) if text else None
        place = f"{where}, line {line}" if line else where
        key = ".".join(str(part) for part in location)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown setting"
        raise ConfigError(f"{place}: {key}: {message}") from None
    if len({b.address for b in config.backend}) < len(config.backend):
        raise ConfigError(f"{where}: a backend is listed twice")
    return config


_AT = re.compile(r" \(at line (\d+), column (\d+)\)$")
_TABLE = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.-]+)\s*\]\]?")
_KEY = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")


def _line_of(text: str, location: tuple[int | str, ...]) -> int | None:
    """The line of `text` that sets the key at `location` (("listen", "port"), or
    ("backend", 2, "weight") for the third [[backend]]), or its table's header line."""
    parts = [p for p in location if isinstance(p, str)]
    index = next((p for p in location if isinstance(p, int)), None)
    if not parts:
        return None
    table, key = parts[0], parts[1] if len(parts) > 1 else None
    current, seen, header = "", -1, None
    for number, line in enumerate(text.splitlines(), 1):
        if match := _TABLE.match(line):
            current = match.group(1)
            if current == table:
                seen += 1
                if index is None or seen == index:
                    header = number
                    if key is None:
                        return header
            continue
        match = _KEY.match(line)
        if not match:
            continue
        if current == "" and match.group(1) == table:  # a key outside any table
            return number
        if current == table and (index is None or seen == index) and match.group(1) == key:
            return number
    return header
