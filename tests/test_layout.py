"""The test tree's own rule: test modules never import each other (shared helpers live in
tests/fixtures.py or a folder's helper module), so each one can be run, moved or deleted alone."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import``/``from ... import`` statement of ``path`` names."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_no_test_module_imports_another() -> None:
    modules = sorted(TESTS.rglob("*.py"))
    assert len([p for p in modules if p.name.startswith("test_")]) > 10  # the walk found the suite
    offenders = {
        str(p.relative_to(TESTS.parent)): sorted(m for m in imported_modules(p)
                                               if m.startswith("tests.") and m.rsplit(".", 1)[-1].startswith("test_"))
        for p in modules
    }
    assert {k: v for k, v in offenders.items() if v} == {}
