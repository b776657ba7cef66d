"""The packages' dependencies point one way: audit -> train -> curate.

``curate`` (curation) imports neither ``train`` nor ``audit``, so curation runs, Ray workers and a curation-only
install never need the trainer; ``train`` never imports ``audit``, so the trainer needs no curation run to read;
``audit`` (model card, export with the card, memorization, weight comparison) may import both. The one exception
is ``curate/cli.py``, the ``cleanroom`` entry point, which hangs every package's commands on its parser.

Read from the source with ast, so every import counts: top-level or inside a function, ``import x``, ``from x
import y``, and modules named to ``importlib.import_module`` (or ``train.cli.registered_in``) as string constants.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("curate", "train", "audit")
FORBIDDEN = {"curate": {"train", "audit"}, "train": {"audit"}, "audit": set()}
ENTRY_POINT = "curate/cli.py"  # the one module allowed to import every package
LAZY_IMPORTERS = {"import_module", "registered_in"}  # calls whose string argument names a module to import


def imported_modules(path: Path) -> set[str]:
    """Every absolute module name `path` imports (relative imports stay inside their package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if name in LAZY_IMPORTERS:
                found.add(node.args[0].value)
    return found


def sources(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def crossings(package: str) -> dict[str, list[str]]:
    """module path -> the forbidden modules it imports."""
    found = {}
    for path in sources(package):
        relative = path.relative_to(ROOT).as_posix()
        bad = sorted(m for m in imported_modules(path) if m.split(".")[0] in FORBIDDEN[package])
        if bad and relative != ENTRY_POINT:
            found[relative] = bad
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_follow_the_package_boundaries(package: str):
    assert sources(package), f"no sources found under {package}/"
    assert crossings(package) == {}, f"{package} may not import {', '.join(sorted(FORBIDDEN[package]))}"


def test_the_entry_point_is_the_one_exception_and_still_needs_it():
    imported = {m.split(".")[0] for m in imported_modules(ROOT / ENTRY_POINT)}
    assert {"train", "audit"} <= imported


def test_the_scan_sees_imports_inside_functions_and_lazy_module_names(tmp_path: Path):
    path = tmp_path / "m.py"
    path.write_text("import os\n"
                    "def f():\n"
                    "    from train.loop import train\n"
                    "    import audit.card as card\n"
                    "    importlib.import_module('audit.compare')\n"
                    "    registered_in('audit.memorization')\n"
                    "    from . import sibling\n")
    assert imported_modules(path) == {"os", "train.loop", "audit.card", "audit.compare", "audit.memorization"}
