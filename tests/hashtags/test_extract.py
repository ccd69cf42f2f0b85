"""The tag rules, case by case: what a user typing a post expects to be a hashtag."""

from __future__ import annotations

import pytest

from sdlab.hashtags.extract import MAX_LENGTH, Tag, hashtags, key_of

CASES = [
    # text, the tags shown (in order of first mention)
    ("plain #python", ["python"]),
    ("#Python at the start", ["Python"]),
    ("two #one and #two", ["one", "two"]),
    ("#one#two glued", ["one", "two"]),
    ("x#one#two after a letter", []),
    ("C# is not a tag", []),
    ("a#b inside a word", []),
    ("digits: 1#b", []),
    ("under_#b", []),
    ("an entity &#39; is not", []),
    ("#2024 is all digits", []),
    ("#1st has a letter", ["1st"]),
    ("#___ has no letter", []),
    ("#_2 has no letter", []),
    ("#snake_case_tag", ["snake_case_tag"]),
    ("#tag. ends at a full stop", ["tag"]),
    ("#tag's ends at an apostrophe", ["tag"]),
    ("(#paren) and [#bracket]", ["paren", "bracket"]),
    ("#tag-with-dash", ["tag"]),
    ("#tag, #tag! #tag?", ["tag"]),
    ("#Python #python #PYTHON: one key, first display", ["Python"]),
    ("#Straße and #STRASSE fold to one", ["Straße"]),
    ("#café precomposed", ["café"]),
    ("#cafe\u0301 with a combining accent", ["café"]),
    ("#日本語 in Japanese", ["日本語"]),
    ("#ภาษาไทย with marks", ["ภาษาไทย"]),
    ("#русский and #العربية", ["русский", "العربية"]),
    ("full-width ＃タグ", ["タグ"]),
    ("##double sign", ["double"]),
    ("# space after the sign", []),
    ("a lone # sign", []),
    ("keycap #\ufe0f\u20e3 emoji", []),
    ("#🔥 emoji only", []),
    ("#fire🔥 ends at the emoji", ["fire"]),
    ("see https://example.com/page#section", []),
    ("see http://example.com/#!/route and #real", ["real"]),
    ("www.example.com/#anchor", []),
    ("example.org/docs#intro", []),
    ("mail me#x@example.com", []),
    ("mail me@example.com #after", ["after"]),
    ("line\n#next line", ["next"]),
    ("tab\t#tabbed", ["tabbed"]),
    ("#" + "a" * MAX_LENGTH + " at the limit", ["a" * MAX_LENGTH]),
    ("#" + "a" * (MAX_LENGTH + 1) + " past it", []),
]


@pytest.mark.parametrize(("text", "shown"), CASES, ids=[c[0][:40] for c in CASES])
def test_the_tags_users_expect(text: str, shown: list[str]) -> None:
    assert [tag.display for tag in hashtags(text)] == shown


def test_there_are_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30


def test_keys_are_case_folded_and_normalised() -> None:
    assert hashtags("#PyThOn") == [Tag("python", "PyThOn")]
    assert key_of("#STRASSE") == key_of("Straße") == "strasse"
    assert key_of("cafe\u0301") == key_of("café")
