"""The counts, in PostgreSQL: written one batch per transaction, exactly once.

    posts        (post_id PK, author, created, text, counted)   every post counted, once
    tags         (key PK, display, count, first_seen, last_seen, recent)
    tag_minutes  (key, minute, count)                    mentions per minute, for trending
    tag_hours    (key, hour, count)                      minutes older than `keep_minutes`
    consumed     (topic, grp, part, next_offset)         how far the counts have read

Why the counts are exact through crashes: a batch is one transaction that inserts its
posts, adds their tags to the counts and moves `consumed` past the batch's offsets; the
counter acks the batch to the broker only after the transaction commits. A crash before
the commit leaves none of the batch (the broker delivers it again); a crash after it
leaves all of it, and the batch delivered again is recognised twice over: its offsets
are below `consumed` (a Kafka topic), and its posts are in `posts` already (any broker,
and a post the extractor sent twice, at two offsets, after it was killed between sending
and acking). The broker's own commit is a hint that saves reading the batch again.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sdlab import sql
from sdlab.hashtags.extract import key_of
from sdlab.hashtags.posts import Tagged

LOCK = "sdlab_hashtags_schema"
RECENT = 10  # newest posts kept per tag
SMOOTHING = 10
"""Trending's prior: growth is (now + 10) / (before + 10), so that a tag going from 0 to 1
mention is not "infinitely" trending and one going from 100 to 300 is."""

DDL = [
    """CREATE TABLE IF NOT EXISTS posts (
        post_id BIGINT PRIMARY KEY,
        author BIGINT NOT NULL,
        created TIMESTAMPTZ NOT NULL,
        text TEXT NOT NULL,
        counted TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp())""",
    """CREATE TABLE IF NOT EXISTS tags (
        key TEXT PRIMARY KEY,
        display TEXT NOT NULL,
        count BIGINT NOT NULL,
        first_seen TIMESTAMPTZ NOT NULL,
        last_seen TIMESTAMPTZ NOT NULL,
        recent BIGINT[] NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS tags_by_count ON tags (count DESC, key)",
    """CREATE TABLE IF NOT EXISTS tag_minutes (
        key TEXT NOT NULL,
        minute TIMESTAMPTZ NOT NULL,
        count BIGINT NOT NULL,
        PRIMARY KEY (key, minute))""",
    "CREATE INDEX IF NOT EXISTS tag_minutes_by_minute ON tag_minutes (minute)",
    """CREATE TABLE IF NOT EXISTS tag_hours (
        key TEXT NOT NULL,
        hour TIMESTAMPTZ NOT NULL,
        count BIGINT NOT NULL,
        PRIMARY KEY (key, hour))""",
    """CREATE TABLE IF NOT EXISTS consumed (
        topic TEXT NOT NULL,
        grp TEXT NOT NULL,
        part INT NOT NULL,
        next_offset BIGINT NOT NULL,
        PRIMARY KEY (topic, grp, part))""",
]

# One statement adds a batch: the posts not seen before, their tags' totals, their
# minutes. Data-modifying CTEs run once each, whether or not the query reads them. The
# batch goes as two JSON documents: psycopg quotes a text array element by element, in
# Python, and that was a fifth of the counter's time.
_ADD = """
WITH fresh AS (
    INSERT INTO posts (post_id, author, created, text)
    SELECT p.id, p.user, to_timestamp(p.created), p.text
    FROM jsonb_to_recordset(%s::jsonb) AS p(id bigint, "user" bigint, created float8, text text)
    ON CONFLICT (post_id) DO NOTHING
    RETURNING post_id, created
), mentions AS (
    SELECT m.key, m.display, m.ord, f.post_id, f.created
    FROM jsonb_to_recordset(%s::jsonb) AS m(post_id bigint, key text, display text, ord int)
    JOIN fresh f USING (post_id)
), totals AS (
    INSERT INTO tags AS t (key, display, count, first_seen, last_seen, recent)
    SELECT key, (array_agg(display ORDER BY ord))[1], count(*), min(created), max(created),
           (array_agg(post_id ORDER BY created DESC, post_id DESC))[1:%s]
    FROM mentions GROUP BY key ORDER BY key
    ON CONFLICT (key) DO UPDATE SET
        count = t.count + excluded.count,
        first_seen = least(t.first_seen, excluded.first_seen),
        last_seen = greatest(t.last_seen, excluded.last_seen),
        recent = (excluded.recent || t.recent)[1:%s]
    RETURNING 1
), minutes AS (
    INSERT INTO tag_minutes AS tm (key, minute, count)
    SELECT key, date_trunc('minute', created), count(*) FROM mentions
    GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (key, minute) DO UPDATE SET count = tm.count + excluded.count
    RETURNING 1
)
SELECT (SELECT count(*) FROM fresh), (SELECT count(*) FROM mentions)
"""


@dataclass(frozen=True, slots=True)
class Delivered:
    """A tagged post as the counter got it, with its place in the topic on Kafka."""

    tagged: Tagged
    partition: int | None = None
    offset: int | None = None


@dataclass(frozen=True, slots=True)
class Added:
    posts: int
    """Posts counted by this batch (the rest were counted before)."""
    mentions: int
    skipped: int
    """Deliveries below the stored offsets: a batch read again after a crash."""


@dataclass(frozen=True, slots=True)
class PostView:
    id: int
    user: int
    text: str
    created: datetime


@dataclass(frozen=True, slots=True)
class TagView:
    key: str
    display: str
    count: int
    first_seen: datetime
    last_seen: datetime
    recent: list[PostView]


@dataclass(frozen=True, slots=True)
class Ranked:
    key: str
    display: str
    count: int


@dataclass(frozen=True, slots=True)
class Page:
    tags: list[Ranked]
    cursor: str | None
    """Pass it back for the next page; None: this is the last."""


@dataclass(frozen=True, slots=True)
class Trend:
    key: str
    display: str
    now: int
    """Mentions in the window."""
    before: int
    """Mentions in the window before it."""
    growth: float


class BadCursor(ValueError):
    """A `cursor` this store did not hand out."""


_WINDOW = re.compile(r"^(\d+)([mh])$")
MAX_WINDOW_MINUTES = 24 * 60


def window_minutes(window: str) -> int:
    """`15m` or `2h` as minutes (1 minute to 24 hours); ValueError otherwise."""
    found = _WINDOW.match(window.strip())
    if not found:
        raise ValueError(f"window {window!r}: give minutes or hours, as 15m or 2h")
    minutes = int(found[1]) * (60 if found[2] == "h" else 1)
    if not 1 <= minutes <= MAX_WINDOW_MINUTES:
        raise ValueError(f"window {window!r}: it must be from 1m to 24h")
    return minutes


def _encode_cursor(count: int, key: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([count, key]).encode()).decode()


def _decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        count, key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if isinstance(count, int) and isinstance(key, str):
            return count, key
    except ValueError:
        pass
    raise BadCursor(f"cursor {cursor!r} is not one this service handed out")


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class Store:
    """The hashtag store on `db` (a PostgreSQL `sdlab.sql.Database`)."""

    def __init__(self, db: sql.Database) -> None:
        if db.dialect.engine != "postgresql":
            raise sql.UnknownDatabase(
                f"{db.name}: the hashtag store is PostgreSQL (arrays, data-modifying CTEs)"
            )
        self.db = db

    async def create(self) -> None:
        await sql.ensure_schema(self.db, DDL, lock=LOCK)

    # -- writing ---------------------------------------------------------------------

    async def add(self, batch: Sequence[Delivered], *, topic: str = "", group: str = "") -> Added:
        """Count `batch` in one transaction, exactly once (see the module's docstring):
        deliveries below `consumed` for (`topic`, `group`) and posts counted before are
        skipped. A deadlock with another counter runs the transaction again."""
        return await self.db.run_transaction(lambda tx: self._add(tx, batch, topic, group))

    async def _add(
        self, tx: sql.Session, batch: Sequence[Delivered], topic: str, group: str
    ) -> Added:
        parts = sorted({d.partition for d in batch if d.partition is not None})
        done: dict[int, int] = {}
        if parts:
            await tx.execute(
                "INSERT INTO consumed (topic, grp, part, next_offset) "
                "SELECT %s, %s, p, 0 FROM unnest(%s::int[]) AS p ON CONFLICT DO NOTHING",
                (topic, group, parts),
            )
            rows = await tx.fetch(
                "SELECT part, next_offset FROM consumed WHERE topic = %s AND grp = %s "
                "AND part = ANY(%s) ORDER BY part FOR UPDATE",
                (topic, group, parts),
            )
            done = dict(rows)
        posts: dict[int, Tagged] = {}
        ends: dict[int, int] = {}
        skipped = 0
        for d in batch:
            if d.partition is not None and d.offset is not None:
                if d.offset < done[d.partition]:
                    skipped += 1
                    continue
                ends[d.partition] = max(ends.get(d.partition, 0), d.offset + 1)
            posts.setdefault(d.tagged.post.id, d.tagged)
        fresh = mentions = 0
        if posts:
            ps = list(posts.values())
            m = [(t.post.id, tag) for t in ps for tag in t.tags]
            fresh, mentions = await tx.fetchone(  # type: ignore[misc]
                _ADD,
                (
                    json.dumps(
                        [
                            {"id": p.id, "user": p.user, "created": p.created, "text": p.text}
                            for p in (t.post for t in ps)
                        ]
                    ),
                    json.dumps(
                        [
                            {"post_id": i, "key": tag.key, "display": tag.display, "ord": n}
                            for n, (i, tag) in enumerate(m)
                        ]
                    ),
                    RECENT,
                    RECENT,
                ),
            )
        if ends:
            await tx.execute(
                "UPDATE consumed SET next_offset = e.next_offset "
                "FROM unnest(%s::int[], %s::bigint[]) AS e(part, next_offset) "
                "WHERE consumed.topic = %s AND consumed.grp = %s AND consumed.part = e.part",
                (list(ends), list(ends.values()), topic, group),
            )
        return Added(fresh, mentions, skipped)

    async def roll_up(self, *, keep_minutes: int = 2 * MAX_WINDOW_MINUTES) -> int:
        """Fold the minutes older than `keep_minutes` into hours; returns how many
        minute rows were folded. Trending needs twice its longest window of minutes."""
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO tag_hours AS th (key, hour, count) "
                "SELECT key, date_trunc('hour', minute), sum(count) FROM tag_minutes "
                "WHERE minute < now() - make_interval(mins => %s) GROUP BY 1, 2 "
                "ORDER BY 1, 2 "
                "ON CONFLICT (key, hour) DO UPDATE SET count = th.count + excluded.count",
                (keep_minutes,),
            )
            return await tx.execute(
                "DELETE FROM tag_minutes WHERE minute < now() - make_interval(mins => %s)",
                (keep_minutes,),
            )

    # -- reading ---------------------------------------------------------------------

    async def tag(self, name: str) -> TagView | None:
        """One tag by any spelling (`#Python`, `python`), None if never seen."""
        row = await self.db.fetchone(
            "SELECT key, display, count, first_seen, last_seen, recent FROM tags WHERE key = %s",
            (key_of(name),),
        )
        if row is None:
            return None
        key, display, count, first, last, recent = row
        posts = await self.db.fetch(
            "SELECT post_id, author, text, created FROM posts WHERE post_id = ANY(%s) "
            "ORDER BY created DESC, post_id DESC",
            (recent,),
        )
        return TagView(key, display, count, first, last, [PostView(*p) for p in posts])

    async def top(self, *, limit: int = 20, cursor: str | None = None) -> Page:
        """Tags by count, most first (ties by key); a page of `limit` and the cursor
        of the next. Counts move while one pages: a tag may move past the cursor."""
        if cursor is None:
            rows = await self.db.fetch(
                "SELECT key, display, count FROM tags ORDER BY count DESC, key LIMIT %s",
                (limit + 1,),
            )
        else:
            count, key = _decode_cursor(cursor)
            rows = await self.db.fetch(
                "SELECT key, display, count FROM tags "
                "WHERE count < %s OR (count = %s AND key > %s) "
                "ORDER BY count DESC, key LIMIT %s",
                (count, count, key, limit + 1),
            )
        tags = [Ranked(*r) for r in rows[:limit]]
        more = len(rows) > limit
        return Page(tags, _encode_cursor(tags[-1].count, tags[-1].key) if more else None)

    async def trending(
        self, *, window: int = 15, limit: int = 10, now: datetime | None = None
    ) -> list[Trend]:
        """The tags growing fastest: mentions in the last `window` minutes against the
        `window` minutes before, smoothed (`SMOOTHING`); at least two mentions now."""
        end = (now or datetime.now(UTC)) + timedelta(minutes=1)
        end = end.replace(second=0, microsecond=0)  # the current minute counts
        rows = await self.db.fetch(
            """
            WITH w AS (
                SELECT key,
                       sum(count) FILTER (WHERE minute >= %s) AS now,
                       coalesce(sum(count) FILTER (WHERE minute < %s), 0) AS before
                FROM tag_minutes WHERE minute >= %s AND minute < %s GROUP BY key
            )
            SELECT w.key, t.display, w.now, w.before,
                   (w.now + %s)::float8 / (w.before + %s) AS growth
            FROM w JOIN tags t USING (key)
            WHERE w.now >= 2
            ORDER BY growth DESC, w.now DESC, w.key LIMIT %s
            """,
            (
                end - timedelta(minutes=window),
                end - timedelta(minutes=window),
                end - timedelta(minutes=2 * window),
                end,
                SMOOTHING,
                SMOOTHING,
                limit,
            ),
        )
        return [Trend(k, d, int(n), int(b), round(g, 3)) for k, d, n, b, g in rows]

    async def totals(self) -> dict[str, int]:
        """Every tag's count, by key."""
        return dict(await self.db.fetch("SELECT key, count FROM tags"))

    async def summary(self) -> dict[str, Any]:
        posts, tags, mentions = await self.db.fetchone(  # type: ignore[misc]
            "SELECT (SELECT count(*) FROM posts), count(*), coalesce(sum(count), 0) FROM tags"
        )
        return {"posts": posts, "tags": tags, "mentions": int(mentions)}

    async def delays(
        self, quantiles: Sequence[float] = (0.5, 0.99), *, since: float = 0.0
    ) -> list[float]:
        """Seconds from a post's creation to its count's insert, at `quantiles`, over
        the posts created since `since` (seconds since the epoch); the commit follows
        within the batch's transaction."""
        row = await self.db.fetchone(
            "SELECT percentile_cont(%s::float8[]) WITHIN GROUP "
            "(ORDER BY extract(epoch FROM counted - created)) FROM posts WHERE created >= %s",
            (list(quantiles), _utc(since)),
        )
        return [float(q) for q in row[0]] if row and row[0] else []

    async def consumed(self, topic: str, group: str) -> dict[int, int]:
        """The offset the counts have read to, per partition."""
        rows = await self.db.fetch(
            "SELECT part, next_offset FROM consumed WHERE topic = %s AND grp = %s",
            (topic, group),
        )
        return dict(rows)
