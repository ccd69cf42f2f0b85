"""Every test gets real servers through sdlab's own pytest plugin."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sdlab.config import settings

pytest_plugins = ["sdlab.infra.pytest_plugin"]


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A state directory of the test's own (for `up`/`down` without touching .sdlab/)."""
    path = tmp_path / "state"
    monkeypatch.setenv("SDLAB_STATE_DIR", str(path))
    settings.cache_clear()
    yield path
    settings.cache_clear()
