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
    text = text.lstrip(_SIGNS)
    if text.isascii():  # most tags: casefold is lower, and NFC changes nothing
        return text.lower()
    return unicodedata.normalize("NFC", text.casefold())


_SIGN = re.compile("[#＃]")
_WORD = re.compile(r"\w+")  # str.isalnum() or "_", as the rules say, minus the marks


def _end_of_body(text: str, start: int) -> int:
    """Where a tag's body starting at `start` ends: word characters and combining
    marks (a mark is not `\\w` to `re`: Thai vowels, a decomposed accent)."""
    end, n = start, len(text)
    while True:
        found = _WORD.match(text, end)
        if found:
            end = found.end()
        if end < n and unicodedata.category(text[end]).startswith("M"):
            end += 1
            continue
        return end


def _has_letter(body: str) -> bool:
    if body.isascii():  # letters, digits and _ only: a letter is what is left of them
        rest = body.replace("_", "")
        return bool(rest) and not rest.isdigit()
    return any(c.isalpha() for c in body)


def _before_ok(char: str) -> bool:
    return not (char.isalnum() or char == "_" or char == "&")


def _hidden(text: str) -> list[tuple[int, int]]:
    """The spans of URLs and e-mail addresses, where a `#` is no tag."""
    if "/" not in text and "@" not in text and "www." not in text.lower():
        return []
    return [m.span() for m in _URL.finditer(text)] + [m.span() for m in _EMAIL.finditer(text)]


def hashtags(text: str) -> list[Tag]:
    """The tags of `text`, each key once, in the order of their first mention."""
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    hidden: list[tuple[int, int]] | None = None  # found when a `#` needs them
    found: dict[str, Tag] = {}
    n = len(text)
    after_tag = -1  # where the last tag ended: a `#` right there starts another
    sign = _SIGN.search(text)
    while sign is not None:
        i = sign.start()
        start = i + 1
        end = _end_of_body(text, start)
        body = text[start:end]
        ok = bool(body) and (i == 0 or i == after_tag or _before_ok(text[i - 1]))
        if ok:
            if hidden is None:
                hidden = _hidden(text)
            ok = not any(a <= i < b for a, b in hidden)
        if ok and len(body) <= MAX_LENGTH and _has_letter(body):
            key = key_of(body)
            if key not in found:
                found[key] = Tag(key, body)
            after_tag = end
        sign = _SIGN.search(text, max(end, start)) if end < n else None
    return list(found.values())
