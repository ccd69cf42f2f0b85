"""A scratch database on each engine, for the locking tests."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["mysql", "postgres"], ids=["mariadb", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A fresh database on each engine (the plugin's fixtures, dropped afterwards)."""
    return str(request.getfixturevalue(f"{request.param}_db"))
