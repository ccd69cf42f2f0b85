"""SCAN's MATCH patterns against Redis's own matcher, ported line for line as the
reference (the server test compares with a real Redis too)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sdlab.kv.match import compile_pattern, literal_prefix


def stringmatch(pattern: bytes, string: bytes) -> bool:
    """Redis's `stringmatchlen_impl` (src/util.c, 7.x), without `nocase`. Reads past
    the end of the pattern see its terminating NUL, as in C."""
    skip_longer = False

    def at(i: int) -> int:
        return pattern[i] if i < len(pattern) else 0

    def impl(p: int, s: int, nesting: int) -> bool:
        nonlocal skip_longer
        if nesting > 1000:
            return False
        plen, slen = len(pattern) - p, len(string) - s
        while plen and slen:
            c = pattern[p]
            if c == ord("*"):
                while plen and at(p + 1) == ord("*"):
                    p, plen = p + 1, plen - 1
                if plen == 1:
                    return True
                while slen:
                    if impl(p + 1, s, nesting + 1):
                        return True
                    if skip_longer:
                        return False
                    s, slen = s + 1, slen - 1
                skip_longer = True
                return False
            if c == ord("?"):
                s, slen = s + 1, slen - 1
            elif c == ord("["):
                p, plen = p + 1, plen - 1
                negate = at(p) == ord("^")
                if negate:
                    p, plen = p + 1, plen - 1
                match = False
                while True:
                    if at(p) == ord("\\") and plen >= 2:
                        p, plen = p + 1, plen - 1
                        match = match or at(p) == string[s]
                    elif at(p) == ord("]"):
                        break
                    elif plen == 0:
                        p, plen = p - 1, plen + 1
                        break
                    elif plen >= 3 and at(p + 1) == ord("-"):
                        start, end = sorted((at(p), at(p + 2)))
                        p, plen = p + 2, plen - 2
                        match = match or start <= string[s] <= end
                    else:
                        match = match or at(p) == string[s]
                    p, plen = p + 1, plen - 1
                if negate:
                    match = not match
                if not match:
                    return False
                s, slen = s + 1, slen - 1
            else:
                if c == ord("\\") and plen >= 2:
                    p, plen = p + 1, plen - 1
                if at(p) != string[s]:
                    return False
                s, slen = s + 1, slen - 1
            p, plen = p + 1, plen - 1
            if slen == 0:
                while at(p) == ord("*"):
                    p, plen = p + 1, plen - 1
                break
        return plen == 0 and slen == 0

    return impl(0, 0, 0)


def made_of(alphabet: bytes, min_size: int = 0) -> st.SearchStrategy[bytes]:
    return st.lists(st.sampled_from(alphabet), min_size=min_size, max_size=8).map(bytes)


@settings(max_examples=1000, deadline=None)
@given(made_of(b"ab*?[]^-\\"), made_of(b"ab]^-\\[*?", min_size=1))
def test_patterns_match_what_redis_matches(pattern: bytes, key: bytes) -> None:
    # Keys are never empty here (Redis's `*` would not match an empty one).
    assert bool(compile_pattern(pattern).fullmatch(key)) == stringmatch(pattern, key)


def test_the_literal_prefix_stops_at_the_first_special_byte() -> None:
    assert literal_prefix(b"user:*") == b"user:"
    assert literal_prefix(b"a\\*b") == b"a"
    assert literal_prefix(b"plain") == b"plain"


def test_many_stars_on_a_long_key_do_not_backtrack_without_end() -> None:
    # A plain translation (`.*a.*a...b`) takes longer than the age of the universe here.
    assert compile_pattern(b"*a" * 15 + b"*b").fullmatch(b"a" * 1024) is None
    assert compile_pattern(b"*a" * 15 + b"*b").fullmatch(b"a" * 1024 + b"b")
