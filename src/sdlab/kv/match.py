"""SCAN's MATCH patterns, read as Redis reads them (`stringmatchlen` in its util.c).

    *  any bytes     ?  one byte     [abc] [a-z] [^a]  one byte of a set (or not of it)
    \\x  the byte x, also inside brackets

Python's fnmatch is another dialect (`[!a]` negates, `[^a]` does not, no escapes), so a
pattern is translated here into a regular expression over bytes. Each stretch between
two stars is matched atomically at its first place, as glob matchers do: no pattern,
however many stars it has, makes the match backtrack without end.
"""

from __future__ import annotations

import re

_SPECIAL = b"*?[\\"


def compile_pattern(pattern: bytes) -> re.Pattern[bytes]:
    """A regular expression whose `fullmatch` is true of what the Redis glob `pattern`
    matches."""
    pieces: list[bytes | None] = []  # a regular expression for one byte each; None: a star
    i, n = 0, len(pattern)
    while i < n:
        byte = pattern[i]
        i += 1
        if byte == ord("*"):
            if not pieces or pieces[-1] is not None:
                pieces.append(None)
        elif byte == ord("?"):
            pieces.append(b".")
        elif byte == ord("["):
            members, i = _bracket(pattern, i)
            pieces.append(_one_of(members))
        else:
            if byte == ord("\\") and i < n:  # a lone trailing backslash is itself
                byte = pattern[i]
                i += 1
            pieces.append(re.escape(bytes([byte])))
    return re.compile(_join(pieces), re.DOTALL)


def literal_prefix(pattern: bytes) -> bytes:
    """What every key the pattern matches starts with: its bytes before the first special
    one (a range scan can start there)."""
    for i, byte in enumerate(pattern):
        if byte in _SPECIAL:
            return pattern[:i]
    return pattern


def _bracket(pattern: bytes, i: int) -> tuple[set[int], int]:
    """The bytes `[...]` stands for, from just after its `[`; and where it ends. Redis's
    rules: `^` first negates, `\\` quotes, `x-y` is a range either way round, and a
    missing `]` closes the set at the end of the pattern."""
    n = len(pattern)
    negate = i < n and pattern[i] == ord("^")
    i += negate
    members: set[int] = set()
    while i < n and pattern[i] != ord("]"):
        if pattern[i] == ord("\\") and i + 1 < n:
            members.add(pattern[i + 1])
            i += 2
        elif i + 2 < n and pattern[i + 1] == ord("-"):
            low, high = sorted((pattern[i], pattern[i + 2]))
            members.update(range(low, high + 1))
            i += 3
        else:
            members.add(pattern[i])
            i += 1
    return (set(range(256)) - members if negate else members), i + 1


def _one_of(members: set[int]) -> bytes:
    if not members:
        return b"(?!)"  # `[]` matches nothing
    return b"[" + b"".join(re.escape(bytes([m])) for m in sorted(members)) + b"]"


def _join(pieces: list[bytes | None]) -> bytes:
    """`head*middle*...*tail`: the head at the start, each middle atomically at its first
    place after the one before (a later place never helps), the tail at the end."""
    stretches: list[list[bytes]] = [[]]
    for piece in pieces:
        if piece is None:
            stretches.append([])
        else:
            stretches[-1].append(piece)
    head, *rest = (b"".join(stretch) for stretch in stretches)
    if not rest:
        return head
    *middles, tail = rest
    return head + b"".join(b"(?>.*?" + m + b")" for m in middles) + b".*" + tail
