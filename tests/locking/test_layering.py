"""The library modules of sdlab.locking import no front-end or harness code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sdlab.locking

FOLDER = Path(sdlab.locking.__file__).parent
FRONT_ENDS = {"cli.py", "experiment.py", "service.py"}
FORBIDDEN = ("typer", "fastapi", "rich", "sdlab.infra", "sdlab.bench", "sdlab.lab", "sdlab.cli")
LIBRARY = sorted(p.name for p in FOLDER.glob("*.py") if p.name not in FRONT_ENDS)


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("module", LIBRARY)
def test_a_library_module_imports_no_front_end(module: str) -> None:
    bad = {
        name
        for name in imported(FOLDER / module)
        for forbidden in FORBIDDEN
        if name == forbidden or name.startswith(forbidden + ".")
    }
    assert not bad, f"sdlab/locking/{module} imports {sorted(bad)}"


def test_the_library_modules_are_the_ones_expected() -> None:
    assert {"scheduler.py", "waits.py", "cases.py", "anomalies.py"} <= set(LIBRARY)
