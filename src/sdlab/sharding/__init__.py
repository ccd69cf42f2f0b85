"""Database sharding: users spread over separate database servers, found again by key.

    from sdlab.sharding import ShardedUsers, create, reshard

    await create(catalog_url, [shard_url_0, shard_url_1], router="ring")
    async with await ShardedUsers.open(catalog_url) as users:
        alice = await users.insert("alice", "alice@example.com")   # on the shard its id says
        page = await users.page(limit=50, order="name")             # merged over every shard
        await reshard(users, [shard_url_0, shard_url_1, shard_url_2])  # online

`routers.py` holds the five routers (modulo, range, ring, jump, rendezvous); `shardmap.py`
the versioned map and how a shard refuses an old one; `repository.py` the users over the
shards; `reshard.py` the online move; `spider.py` MariaDB's Spider engine, for
comparison; `service.py` the HTTP API; `cli.py` `sdlab sharding`.
"""

from sdlab.sharding.repository import (
    BadCursor,
    Page,
    ShardedUsers,
    ShardUnavailable,
    User,
    UserNotFound,
    create,
)
from sdlab.sharding.reshard import MoveReport, reshard
from sdlab.sharding.routers import ROUTERS, Router, key_hash, make_router
from sdlab.sharding.shardmap import Catalog, NoMap, ShardingError, ShardMap, StaleMap

__all__ = [
    "ROUTERS",
    "BadCursor",
    "Catalog",
    "MoveReport",
    "NoMap",
    "Page",
    "Router",
    "ShardMap",
    "ShardUnavailable",
    "ShardedUsers",
    "ShardingError",
    "StaleMap",
    "User",
    "UserNotFound",
    "create",
    "key_hash",
    "make_router",
    "reshard",
]
