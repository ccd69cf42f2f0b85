"""The layering rule: a system's library modules do not import the harness.

A system's front ends (`cli.py`, `service.py`, `experiment.py`) may use anything; its
other modules import only the standard library, drivers, the SQL layer and other
systems' libraries, so that `from sdlab.pool import Pool` costs what a pool costs.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from sdlab import systems

SRC = Path(__file__).resolve().parents[1] / "src"
# *_service.py is another service (the seed's, rebuilt to compare with).
FRONT_ENDS = frozenset({"cli.py", "service.py", "experiment.py"})
SHARED_LIBRARIES = (
    "sql",
    "latency.py",
    "failure.py",
    "addresses.py",
)  # what systems' libraries may import
FORBIDDEN = ("sdlab.infra", "sdlab.bench", "sdlab.lab", "typer", "fastapi", "rich")

# Modules that still break the rule, and why. The list only shrinks: a module that no
# longer breaks it fails the test until it is taken off.
PENDING: dict[str, str] = {}


def library_modules() -> dict[str, Path]:
    """Every module of every system package but its front ends, and of the shared
    libraries they use (the SQL layer, latency, failure), by dotted name."""
    found = {}
    places = [
        SRC / "sdlab" / name for name in (*(s.name for s in systems.SYSTEMS), *SHARED_LIBRARIES)
    ]
    for place in places:
        paths = [place] if place.suffix == ".py" else sorted(place.rglob("*.py"))
        for path in paths:
            if path.name not in FRONT_ENDS and not path.name.endswith("_service.py"):
                parts = path.relative_to(SRC).with_suffix("").parts
                found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in the module, those inside functions too;
    `from a import b` yields `a.b`, which may be a module or a name in `a`."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return names


def forbidden(name: str) -> bool:
    return any(name == layer or name.startswith(layer + ".") for layer in FORBIDDEN)


def violations() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for module, path in library_modules().items():
        bad = [f"line {line}: {name}" for line, name in imported(module, path) if forbidden(name)]
        if bad:
            found[module] = bad
    return found


def test_library_modules_import_no_harness() -> None:
    found = library_modules()
    assert "sdlab.pool.pool" in found  # the walk finds the systems' modules
    assert {"sdlab.sql.database", "sdlab.latency", "sdlab.failure"} <= set(found)
    broken = {m: lines for m, lines in violations().items() if m not in PENDING}
    assert not broken, "library modules import the harness:\n" + "\n".join(
        f"  {module} ({', '.join(lines)})" for module, lines in sorted(broken.items())
    )


def test_pending_modules_still_break_the_rule() -> None:
    unknown = set(PENDING) - set(library_modules())
    assert not unknown, f"PENDING names modules that do not exist: {sorted(unknown)}"
    fixed = set(PENDING) - set(violations())
    assert not fixed, f"these follow the rule now; take them off PENDING: {sorted(fixed)}"


def test_the_rule_sees_imports_inside_functions_and_relative_ones(tmp_path: Path) -> None:
    path = tmp_path / "worker.py"
    path.write_text("def f():\n    import typer\n\nfrom ..bench import Latency\n")
    assert sorted(n for _, n in imported("sdlab.pool.worker", path)) == [
        "sdlab.bench.Latency",
        "typer",
    ]
    assert forbidden("sdlab.bench.Latency")
    assert forbidden("typer")
    assert not forbidden("sdlab.benchmarks")
    assert not forbidden("richtext")


HEAVY = ("mirakuru", "psutil", "rich", "matplotlib", *FORBIDDEN)
LOADED = f"""
import sys
import sdlab.pool
import sdlab.sql
heavy = {HEAVY!r}
print(*sorted(set(h for m in sys.modules for h in heavy if m == h or m.startswith(h + "."))))
"""


def test_importing_the_pool_and_the_sql_layer_loads_no_harness() -> None:
    done = subprocess.run([sys.executable, "-c", LOADED], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [], f"import sdlab.pool, sdlab.sql loaded: {done.stdout.strip()}"
