"""The library modules import no front end: only their front ends (service, cli,
experiment) may use Typer, FastAPI, Rich, sdlab.infra, sdlab.bench or sdlab.lab."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sdlab.checkin

FOLDER = Path(sdlab.checkin.__file__).parent
FRONT_ENDS = {"service.py", "cli.py", "experiment.py"}
FORBIDDEN = ("typer", "fastapi", "rich", "uvicorn", "sdlab.infra", "sdlab.bench", "sdlab.lab")
LIBRARY = sorted(p.name for p in FOLDER.glob("*.py") if p.name not in FRONT_ENDS)


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "sdlab":
                names |= {f"sdlab.{alias.name}" for alias in node.names}
    return names


@pytest.mark.parametrize("module", LIBRARY)
def test_library_modules_import_no_front_end(module: str) -> None:
    bad = [
        name
        for name in imports(FOLDER / module)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    ]
    assert bad == [], f"{module} imports {bad}"


def test_there_is_a_library() -> None:
    assert {"schema.py", "strategies.py", "seatmap.py", "booking.py"} <= set(LIBRARY)
