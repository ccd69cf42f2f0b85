"""The behaviour suite runs on every backend: SQLite (a file), MariaDB and PostgreSQL
(fresh databases on the real servers)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sdlab.kv import Store

BACKENDS = ["sqlite", "mysql", "postgres"]


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'kv.sqlite3'}"
    if request.param == "mysql":
        return str(request.getfixturevalue("mysql_db"))
    return str(request.getfixturevalue("postgres_db"))


@pytest.fixture
async def store(backend_url: str) -> AsyncIterator[Store]:
    async with Store(backend_url, sweep_interval=0) as kv:  # sweeps only when a test asks
        yield kv
