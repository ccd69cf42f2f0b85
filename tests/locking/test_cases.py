"""Each locking case does on each engine what it says: who waited, who failed."""

from __future__ import annotations

import dataclasses

import pytest

from sdlab import sql
from sdlab.locking import CASES, Expect, check, play


@pytest.mark.parametrize("name", list(CASES))
async def test_case_as_expected(name: str, db_url: str) -> None:
    timeline = await play(CASES[name], db_url)
    assert check(CASES[name], timeline) == [], f"{name} on {timeline.engine}"


async def test_the_seed_cases_say_what_the_seed_saw(db_url: str) -> None:
    engine = sql.dialect_for(db_url).engine
    inserts = await play(CASES["inserts"], db_url)
    assert not any(e.blocked or e.error for e in inserts.events)
    locked = await play(CASES["for-update"], db_url)
    assert not locked.event("T2 reads").blocked
    assert locked.event("T2 locks").waited_for == ("T1",)
    deadlock = await play(CASES["deadlock"], db_url)
    assert sorted(deadlock.errors()) == ["Deadlock"]
    victim = next(e.session for e in deadlock.events if e.error)
    assert victim == {"mariadb": "T2", "postgresql": "T1"}[engine]


async def test_a_wrong_expectation_is_reported(db_url: str) -> None:
    case = CASES["for-update"]
    wrong = dataclasses.replace(case, expect={**case.expect, "T2 locks": Expect()})
    problems = check(wrong, await play(wrong, db_url))
    assert len(problems) == 1
    assert problems[0].startswith("step 5 (T2: SELECT")
    assert "waited for T1" in problems[0]
