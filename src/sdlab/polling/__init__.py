"""Short and long polling: a mock EC2 status service whose clients follow creations.

    from sdlab.polling import Fleet

    async with await Fleet.open("mysql://root@127.0.0.1:3306/", redis_url=...) as fleet:
        await fleet.add(["web-1"])
        await fleet.create("web-1")                      # TO_DO -> IN_PROGRESS -> DONE
        server = await fleet.wait("web-1", since=0, timeout=30)

`model.py` holds the statuses and errors; `store.py` the table in MariaDB or PostgreSQL
(versions in commit order); `channel.py` the announcements between processes (Redis
pub/sub, PostgreSQL LISTEN/NOTIFY); `fleet.py` the mirror, the long-poll waiters and the
provisioner; `service.py` the HTTP service and its page; `client.py` a client.
"""

from sdlab.polling.channel import Channel, ChannelUnavailable, PostgresChannel, RedisChannel
from sdlab.polling.client import PollingClient
from sdlab.polling.fleet import Fleet, FleetClosed
from sdlab.polling.model import (
    AlreadyCreated,
    Conflict,
    CreationInProgress,
    Delays,
    PollingError,
    Server,
    Status,
    UnknownServer,
    seed_ids,
)
from sdlab.polling.store import Store
from sdlab.sql import DatabaseUnavailable

__all__ = [
    "AlreadyCreated",
    "Channel",
    "ChannelUnavailable",
    "Conflict",
    "CreationInProgress",
    "DatabaseUnavailable",
    "Delays",
    "Fleet",
    "FleetClosed",
    "PollingClient",
    "PollingError",
    "PostgresChannel",
    "RedisChannel",
    "Server",
    "Status",
    "Store",
    "UnknownServer",
    "seed_ids",
]
