"""The seed's counter, for the experiment beside ours: counts in memory, written to the
store each time a tag's count in memory reaches 10, every message acked as it is read
(what Kafka's auto-commit does). Killed, it loses what it held in memory (up to 9 per
tag); its acked-but-uncommitted messages come back and, where their counts were written
already, count twice.

    seed_counts (key PK, count)
"""

from __future__ import annotations

from collections import Counter

from sdlab import sql
from sdlab.brokers import Broker
from sdlab.hashtags.pipeline import Topics, connect
from sdlab.hashtags.posts import Tagged

FLUSH_EVERY = 10
GROUP = "seed-counter"  # PREFIX.seed-counter
DDL = ["CREATE TABLE IF NOT EXISTS seed_counts (key TEXT PRIMARY KEY, count BIGINT NOT NULL)"]
_ADD = (
    "INSERT INTO seed_counts AS s (key, count) VALUES (%s, %s) "
    "ON CONFLICT (key) DO UPDATE SET count = s.count + excluded.count"
)


async def count(
    broker: Broker, db: sql.Database, topics: Topics, *, flush_every: int = FLUSH_EVERY
) -> None:
    """Count `topics.tagged` as the seed did, until cancelled; a clean stop (the
    cancellation) writes what is held, so that only a kill loses counts."""
    await sql.ensure_schema(db, DDL, lock="sdlab_hashtags_seed")
    held: Counter[str] = Counter()
    try:
        async with broker.consume(topics.tagged, topics.counter, prefetch=500) as messages:
            async for message in messages:
                await message.ack()
                for tag in Tagged.decode(message.body).tags:
                    held[tag.key] += 1
                    if held[tag.key] >= flush_every:
                        await db.execute(_ADD, (tag.key, held.pop(tag.key)))
    finally:
        for key, n in held.items():
            await db.execute(_ADD, (key, n))


async def totals(db: sql.Database) -> dict[str, int]:
    return dict(await db.fetch("SELECT key, count FROM seed_counts"))


async def main(broker_url: str, db_url: str, prefix: str) -> None:
    """Run the seed's counter on the broker and database at these URLs until stopped
    (the experiment runs it as a process of its own, to kill)."""
    broker = await connect(broker_url, session_timeout=2)
    try:
        async with sql.Database(db_url, max_size=2) as db:
            await count(broker, db, Topics(prefix, counter_group=f"{prefix}.{GROUP}"))
    finally:
        await broker.close()
