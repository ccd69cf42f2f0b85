"""The mock EC2 servers: their statuses, how a creation moves along, and the errors.

A server starts NOT_YET_CREATED. Creating it moves it to TO_DO at once, then, by time
alone, to IN_PROGRESS and to DONE. Terminating a DONE server makes it NOT_YET_CREATED
again. Every change gets a new `version`, taken from one counter for the whole table, so
versions grow with every change of a server and order all changes of all servers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    NOT_YET_CREATED = "NOT_YET_CREATED"
    TO_DO = "TO_DO"
    IN_PROGRESS = "IN_PROGRESS"
    DONE = "DONE"

    @property
    def in_progress(self) -> bool:
        """A creation is under way: TO_DO or IN_PROGRESS."""
        return self in (Status.TO_DO, Status.IN_PROGRESS)

    @property
    def next(self) -> Status | None:
        """What this status becomes by itself when its time is up (None: it stays)."""
        return _NEXT.get(self)


_NEXT = {Status.TO_DO: Status.IN_PROGRESS, Status.IN_PROGRESS: Status.DONE}


SERVER_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def seed_ids(count: int) -> list[str]:
    """The ids of the servers a fresh service starts with: server-1 ... server-N."""
    return [f"server-{i}" for i in range(1, count + 1)]


@dataclass(frozen=True)
class Delays:
    """How long a creation stays in each status before it moves on (seconds)."""

    to_do: float = 2.0
    in_progress: float = 3.0

    def __post_init__(self) -> None:
        if not (0 <= self.to_do < 1e6 and 0 <= self.in_progress < 1e6):
            raise ValueError(f"delays must be between 0 and 1e6 seconds, got {self}")


@dataclass(frozen=True)
class Server:
    """One server's state as the database holds it. `changed_at` is the database's clock
    (UTC) at the change."""

    server_id: str
    status: Status
    version: int
    changed_at: datetime
    body: bytes = field(init=False, repr=False, compare=False)
    """The JSON answer about this server, encoded once: a change that wakes thousands of
    waiters is serialised once, not once per waiter."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "body", json.dumps(self.as_dict()).encode())

    def as_dict(self) -> dict[str, Any]:
        return {
            "server_id": self.server_id,
            "status": self.status.value,
            "version": self.version,
            "changed_at": self.changed_at.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Server:
        return cls(
            data["server_id"],
            Status(data["status"]),
            int(data["version"]),
            datetime.fromisoformat(data["changed_at"]),
        )

    @classmethod
    def from_row(cls, server_id: str, status: str, version: int, changed_at: datetime) -> Server:
        """From a database row; a naive time is UTC (MariaDB sessions run in UTC)."""
        if changed_at.tzinfo is None:
            changed_at = changed_at.replace(tzinfo=UTC)
        return cls(server_id, Status(status), int(version), changed_at.astimezone(UTC))


class PollingError(Exception):
    """Base class of the errors a user of sdlab.polling can meet."""


class UnknownServer(PollingError, LookupError):
    """No server has this id (HTTP 404)."""

    def __init__(self, server_id: str) -> None:
        super().__init__(f"no server {server_id!r}")
        self.server_id = server_id


class Conflict(PollingError):
    """The server's status does not allow the request (HTTP 409)."""

    def __init__(self, server: Server, message: str) -> None:
        super().__init__(message)
        self.server = server


class CreationInProgress(Conflict):
    """Create or terminate while a creation is under way (TO_DO or IN_PROGRESS)."""

    def __init__(self, server: Server) -> None:
        super().__init__(
            server,
            f"server {server.server_id!r} is being created (status {server.status.value}, "
            f"version {server.version}); follow it with GET /long/status/{server.server_id}",
        )


class AlreadyCreated(Conflict):
    """Create on a server that is DONE: terminate it first."""

    def __init__(self, server: Server) -> None:
        super().__init__(
            server,
            f"server {server.server_id!r} is already created (version {server.version}); "
            f"POST /terminate/{server.server_id} first",
        )
