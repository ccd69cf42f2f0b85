"""Instagram's ids, made inside PostgreSQL: 41 bits of ms since 2011-01-01, a 13-bit
logical shard, a 10-bit sequence from a per-shard-schema sequence.

    await install(session, schema="shard_5", shard=5)  # the function and its sequence
    CREATE TABLE shard_5.photos (id bigint NOT NULL DEFAULT shard_5.next_id(), ...)

The sequence is taken modulo 1,024, so one schema makes at most 1,024 ids per
millisecond before it could repeat one: Instagram's own limit.
"""

from __future__ import annotations

from sdlab import sql
from sdlab.ids.layout import INSTAGRAM

FUNCTION = """
CREATE SEQUENCE IF NOT EXISTS {schema}.id_seq;
CREATE OR REPLACE FUNCTION {schema}.next_id(OUT result bigint) AS $$
DECLARE
    our_epoch bigint := {epoch};
    seq_id bigint;
    now_millis bigint;
    shard_id int := {shard};
BEGIN
    SELECT nextval('{schema}.id_seq') % 1024 INTO seq_id;
    SELECT FLOOR(EXTRACT(EPOCH FROM clock_timestamp()) * 1000) INTO now_millis;
    result := (now_millis - our_epoch) << 23;
    result := result | (shard_id << 10);
    result := result | (seq_id);
END;
$$ LANGUAGE PLPGSQL;
"""


async def install(session: sql.Session, *, schema: str, shard: int) -> None:
    """Create `schema` with its id sequence and `schema.next_id()` (on PostgreSQL)."""
    if not 0 <= shard <= INSTAGRAM.max_node:
        raise ValueError(f"shard must be in 0..{INSTAGRAM.max_node}, got {shard}")
    # Unquoted on purpose: the function's body names the schema unquoted too, and both
    # fold it to lower case the same way.
    sql.identifier(schema)
    await session.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    await session.execute(FUNCTION.format(schema=schema, epoch=INSTAGRAM.epoch_ms, shard=shard))
