"""The seed's seat map: one line per seat letter, one character per row, `*` taken, `x` free.

A ********************
...                      (render() returns the lines without the letters)
F *****xxxxxxxxxxxxxxx
"""

from __future__ import annotations

from collections.abc import Iterable

from sdlab.checkin.schema import PLANE, Layout
from sdlab.sql import Session

TAKEN, FREE = "*", "x"


def render(taken: Iterable[str], layout: Layout = PLANE) -> list[str]:
    """The map of a plane whose seats named in `taken` have a user."""
    occupied = set(taken)
    return [
        "".join(
            TAKEN if f"{row}{letter}" in occupied else FREE for row in range(1, layout.rows + 1)
        )
        for letter in layout.letters
    ]


def text(lines: list[str], layout: Layout = PLANE) -> str:
    """The map with each line's letter in front, as printed."""
    return "\n".join(f"{letter} {line}" for letter, line in zip(layout.letters, lines, strict=True))


async def taken_seats(session: Session, trip_id: int) -> list[str]:
    """The names of the trip's seats that have a user, as the database has them now."""
    rows = await session.fetch(
        "SELECT name FROM seats WHERE trip_id = %s AND user_id IS NOT NULL", (trip_id,)
    )
    return [str(name) for (name,) in rows]
