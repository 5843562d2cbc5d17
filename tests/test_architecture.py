"""The layering of DEVELOPERS.md, enforced: a package imports only from the layers upstream of it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "fieldward"

BASE = {"errors", "files", "weird"}
UPSTREAM: dict[str, set[str]] = {
    "capture": set(),
    "decode": {"capture"},
    "protocols": {"capture", "decode"},
    "inventory": {"capture", "decode", "protocols"},
    "detect": {"capture", "decode", "protocols", "inventory"},
    "assess": {"capture", "decode", "protocols", "inventory"},
    "store": {"capture", "decode", "protocols", "inventory", "detect", "assess"},
    "trust": {"capture", "decode", "protocols", "inventory", "detect", "assess", "store"},
    "console": {"capture", "decode", "protocols", "inventory", "detect", "assess", "store", "trust"},
    "generator": {"capture"},
}


def fieldward_imports(path: Path) -> set[str]:
    """First component below ``fieldward`` of every ``fieldward.x`` module that ``path`` imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "fieldward" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_every_layer_package_exists() -> None:
    for name in UPSTREAM:
        assert (PACKAGE / name / "__init__.py").is_file(), name


def test_packages_import_only_upstream_layers() -> None:
    violations = []
    for name, allowed in UPSTREAM.items():
        for source in sorted((PACKAGE / name).rglob("*.py")):
            for imported in fieldward_imports(source) - allowed - BASE - {name, "__init__"}:
                violations.append(f"{source.relative_to(PACKAGE)} imports fieldward.{imported}")
    assert violations == []


def test_base_modules_import_no_layer() -> None:
    for name in BASE:
        assert fieldward_imports(PACKAGE / f"{name}.py") <= BASE


def test_the_checker_sees_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import fieldward.store.models\nfrom fieldward.console import api\nfrom . import x\n")
    assert fieldward_imports(sample) == {"store", "console"}
