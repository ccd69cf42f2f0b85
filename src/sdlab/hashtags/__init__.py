"""Hashtag counting: posts on a broker, tags extracted, counts kept exact in PostgreSQL.

    from sdlab.hashtags import Posts, Store, Topics, hashtags, pipeline

    hashtags("Loving #Python, not C#")          # [Tag(key='python', display='Python')]

`extract` holds the tag rules, `posts` the generator and the messages, `store` the
PostgreSQL tables and the one-transaction batch that makes counts exact, `pipeline` the
stages (generate, extract, count) on any `sdlab.brokers.Broker`; `original` the seed's
counter (in memory, flushed every 10), for the experiment.
"""

from sdlab.hashtags import pipeline
from sdlab.hashtags.extract import MAX_LENGTH, Tag, hashtags, key_of
from sdlab.hashtags.pipeline import Progress, Topics
from sdlab.hashtags.posts import Post, Posts, Tagged
from sdlab.hashtags.store import Delivered, Store

__all__ = [
    "MAX_LENGTH",
    "Delivered",
    "Post",
    "Posts",
    "Progress",
    "Store",
    "Tag",
    "Tagged",
    "Topics",
    "hashtags",
    "key_of",
    "pipeline",
]
