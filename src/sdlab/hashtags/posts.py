"""Posts, and the messages the pipeline passes: what a user wrote, and what was found in it.

    posts = Posts(seed=7)
    post = posts.next()        # Post(id=..., user=..., text='... #python ...', created=...)

`Posts` writes posts the way people do: a few words, zero to four hashtags drawn from a
Zipf distribution over a vocabulary (a few tags are everywhere, most are rare), in the
case the writer chose (`#Python`, `#python`), now and then a link with a `#fragment`, an
e-mail address or a tag in another script, so that the extractor's rules are exercised
by the stream as well as by its tests. Post ids are Snowflakes (`sdlab.ids`): unique
across generators with distinct machine ids, and in creation order.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from bisect import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sdlab.hashtags.extract import Tag, hashtags
from sdlab.ids import Snowflake

_WORDS = str.split(
    "the a new my our this today tonight finally again love hate need want just so very "
    "big small fast slow good great best worst first last coffee code bug deploy release "
    "build test ship team city rain sun game match goal music song film book trip train "
    "food pizza night morning weekend launch demo idea plan update news market cloud data"
)
_STEMS = str.split(
    "python rust golang java kotlin swift linux docker kafka postgres redis cloud devops "
    "ai ml data web mobile design ux startup news sports football tennis music travel food "
    "coffee art photo books film tv gaming science space climate health fitness yoga"
)
_SUFFIXES = ["", "", "", "life", "dev", "lovers", "2026", "news", "fans", "daily", "tips"]
_ABROAD = ["日本", "café", "ภาษาไทย", "münchen", "москва", "straße", "العربية", "niño"]


@dataclass(frozen=True, slots=True)
class Post:
    id: int
    user: int
    text: str
    created: float
    """When it was written, seconds since the epoch (milliseconds kept)."""

    def encode(self) -> bytes:
        return json.dumps(
            {"id": self.id, "user": self.user, "text": self.text, "created": self.created},
            ensure_ascii=False,
        ).encode()

    @classmethod
    def decode(cls, body: bytes) -> Post:
        d = json.loads(body)
        return cls(int(d["id"]), int(d["user"]), str(d["text"]), float(d["created"]))


@dataclass(frozen=True, slots=True)
class Tagged:
    """A post with the tags found in it: what the extractor sends the counter, as
    `{"post": <the post as it came>, "tags": [[key, display], ...]}`."""

    post: Post
    tags: tuple[Tag, ...]

    def encode(self) -> bytes:
        return self.wrap(self.post.encode(), self.tags)

    @staticmethod
    def wrap(post: bytes, tags: Sequence[Tag]) -> bytes:
        """The message for a post's bytes as read and its tags: the post is passed
        on as it came, not encoded again."""
        listed = json.dumps([[t.key, t.display] for t in tags], ensure_ascii=False)
        return b'{"post": ' + post + b', "tags": ' + listed.encode() + b"}"

    @classmethod
    def decode(cls, body: bytes) -> Tagged:
        d = json.loads(body)
        p = d["post"]
        post = Post(int(p["id"]), int(p["user"]), str(p["text"]), float(p["created"]))
        return cls(post, tuple(Tag(str(k), str(s)) for k, s in d["tags"]))

    @classmethod
    def of(cls, post: Post) -> Tagged:
        return cls(post, tuple(hashtags(post.text)))


def vocabulary(size: int) -> list[str]:
    """`size` distinct tags, the most common first: stems, then stems with suffixes,
    then numbered topics, with a few in other scripts among the common ones."""
    names = list(dict.fromkeys(s + x for x in _SUFFIXES for s in _STEMS))
    names[5:5] = _ABROAD
    names += (f"topic{i}" for i in range(1, size - len(names) + 1))
    return names[:size]


class Posts:
    """Posts with hashtags from a Zipf(`skew`) distribution over `tags` tags.

    Deterministic for a `seed` but for ids and times; `machine` is the Snowflake machine
    id (give each concurrent generator its own)."""

    def __init__(
        self, *, seed: int | None = None, tags: int = 2000, skew: float = 1.1, machine: int = 0
    ) -> None:
        if tags < 1:
            raise ValueError(f"tags must be at least 1, got {tags}")
        if skew <= 0:
            raise ValueError(f"skew must be positive, got {skew}")
        self.tags = vocabulary(tags)
        weights = [1 / rank**skew for rank in range(1, tags + 1)]
        self._cumulative = list(itertools.accumulate(weights))
        self._random = random.Random(seed)
        self._ids = Snowflake(machine)

    def _tag(self) -> str:
        r = self._random
        name = self.tags[bisect(self._cumulative, r.random() * self._cumulative[-1])]
        style = r.random()
        if style < 0.15:
            name = name.capitalize()
        elif style < 0.2:
            name = name.upper()
        return "#" + name

    def text(self) -> str:
        r = self._random
        words = r.choices(_WORDS, k=r.randint(3, 12))
        for _ in range(r.choices((0, 1, 2, 3, 4), (10, 35, 30, 15, 10))[0]):
            words.insert(r.randint(0, len(words)), self._tag())
        extra = r.random()
        if extra < 0.05:
            words.append(f"https://example.com/post/{r.randint(1, 999)}#comments")
        elif extra < 0.08:
            words.append(f"mail me at dev{r.randint(1, 99)}@example.com")
        elif extra < 0.10:
            words.append("C# " + r.choice(_WORDS))
        return " ".join(words)

    def next(self) -> Post:
        return Post(self._ids.next_id(), self._random.randint(1, 100_000), self.text(), _now())

    def __iter__(self) -> Iterator[Post]:
        while True:
            yield self.next()


def _now() -> float:
    return round(time.time(), 3)
