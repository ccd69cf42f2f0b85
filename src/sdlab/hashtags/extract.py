"""Hashtags in a post's text, by the rules users expect.

    >>> [tag.display for tag in hashtags("Loving #Python and #café, not #2024 or a.com/#x")]
    ['Python', 'café']

A tag is `#` (or the full-width `＃`) followed by Unicode letters, digits, `_` and
combining marks, with at least one letter: `#2024` and `#___` are not tags, `#1st` is.
The text is NFC-normalised first, so `café` typed with a combining accent and with the
precomposed letter is one tag. The `#` must not follow a letter, a digit, `_` or `&`
(`C#`, `a#b` and `&#39;` hold none), nor sit inside a URL or an e-mail address
(`https://a.com/page#top`, `me#x@mail.com`). A `#` right after a tag starts the next one
(`#one#two` is two tags, as Instagram reads it). A tag ends at anything else (`#tag's`,
`#tag.` are `tag`). Longer than `MAX_LENGTH` characters, it is not a tag.

Tags are counted by their case-folded key (`Python`, `PYTHON` and `python` are one tag;
`Straße` and `STRASSE` too) and shown as first seen. One post counts a tag once, however
often it repeats it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

MAX_LENGTH = 100
_SIGNS = "#＃"
_URL = re.compile(
    r"""(?:[a-z][a-z0-9+.-]*://|www\.)\S+          # a scheme or www.
      | [\w.-]+\.[a-z]{2,}(?::\d+)?/\S*           # a bare domain with a path
    """,
    re.IGNORECASE | re.VERBOSE,
)
_EMAIL = re.compile(r"[\w.+#-]+@[\w-]+(?:\.[\w-]+)+")


@dataclass(frozen=True, slots=True)
class Tag:
    key: str
    """What counts: the case-folded, NFC-normalised text after the `#`."""
    display: str
    """As written in this post (NFC)."""


def key_of(text: str) -> str:
    """The counting key of a tag's text (with or without its `#`)."""
    return unicodedata.normalize("NFC", text.lstrip(_SIGNS).casefold())


def _in_tag(char: str) -> bool:
    return char.isalnum() or char == "_" or unicodedata.category(char).startswith("M")


def _before_ok(char: str) -> bool:
    return not (char.isalnum() or char == "_" or char == "&")


def hashtags(text: str) -> list[Tag]:
    """The tags of `text`, each key once, in the order of their first mention."""
    text = unicodedata.normalize("NFC", text)
    hidden = [m.span() for m in _URL.finditer(text)] + [m.span() for m in _EMAIL.finditer(text)]
    found: dict[str, Tag] = {}
    i, n = 0, len(text)
    after_tag = False  # a `#` right after a tag's last character starts another
    while i < n:
        if text[i] not in _SIGNS:
            i += 1
            continue
        start = i + 1
        ok = (i == 0 or after_tag or _before_ok(text[i - 1])) and not any(
            a <= i < b for a, b in hidden
        )
        end = start
        while end < n and _in_tag(text[end]):
            end += 1
        body = text[start:end]
        after_tag = False
        if ok and body and len(body) <= MAX_LENGTH and any(c.isalpha() for c in body):
            found.setdefault(key_of(body), Tag(key_of(body), body))
            after_tag = end < n and text[end] in _SIGNS
        i = max(end, start)
    return list(found.values())
