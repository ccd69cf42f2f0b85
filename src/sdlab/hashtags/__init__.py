"""Hashtag counting: posts on a broker, tags extracted, counts kept exact in PostgreSQL."""

from sdlab.hashtags.extract import MAX_LENGTH, Tag, hashtags, key_of

__all__ = ["MAX_LENGTH", "Tag", "hashtags", "key_of"]
