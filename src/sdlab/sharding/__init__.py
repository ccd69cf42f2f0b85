"""Database sharding: routers, a versioned shard map, a sharded repository, resharding."""
