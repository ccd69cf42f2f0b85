"""Server addresses as clients take them, from sdlab's service URLs (standard library only)."""

from __future__ import annotations

from urllib.parse import urlsplit


def bootstrap_servers(url: str) -> str:
    """`kafka://h1:9092,h2:9092` -> `h1:9092,h2:9092`, the form Kafka clients take."""
    return urlsplit(url).netloc.rpartition("@")[2]
