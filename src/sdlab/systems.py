"""The thirteen building blocks, by folder name.

A system plugs into sdlab by existing: `sdlab.<name>.cli` (a Typer `app`) becomes
`sdlab <name> ...`, and `sdlab.<name>.experiment` registers its experiments with
`sdlab lab`. Nothing else needs editing when a system is added.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class System:
    name: str
    title: str

    @property
    def docs(self) -> str:
        return f"docs/{self.name}.md"

    def module(self, part: str) -> ModuleType | None:
        """`sdlab.<name>.<part>` if this system has one."""
        qualified = f"sdlab.{self.name}.{part}"
        try:
            spec = importlib.util.find_spec(qualified)
        except ModuleNotFoundError:
            return None
        return importlib.import_module(qualified) if spec else None


FOUNDATION = System("infra", "Backing services and the lab")

SYSTEMS = [
    System("pool", "Connection pool"),
    System("sharding", "Database sharding"),
    System("streamlogs", "Log streaming over Server-Sent Events"),
    System("brokers", "Message brokers: RabbitMQ and Kafka"),
    System("replica", "MySQL read replica"),
    System("polling", "Short and long polling: a mock EC2 status service"),
    System("checkin", "Airline seat check-in under contention"),
    System("locking", "SQL locking"),
    System("kv", "Key-value store on a relational database"),
    System("lb", "Load balancer"),
    System("locks", "Remote (distributed) locks"),
    System("ids", "Distributed ID generation"),
    System("hashtags", "Hashtag counting service"),
]


def modules(part: str) -> list[ModuleType]:
    """Every `sdlab.<system>.<part>` module that exists, foundation first."""
    found = (system.module(part) for system in [FOUNDATION, *SYSTEMS])
    return [module for module in found if module is not None]
