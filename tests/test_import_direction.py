"""Layering: no sub-package imports the top package `rolepool` (which imports every layer)."""

from __future__ import annotations

import ast
from pathlib import Path

import rolepool

PACKAGE = Path(rolepool.__file__).parent


def _imports_top_package(path: Path) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "rolepool":
            lines.append(node.lineno)
        elif isinstance(node, ast.Import) and any(a.name == "rolepool" for a in node.names):
            lines.append(node.lineno)
    return lines


def test_no_sub_package_imports_the_top_package():
    offenders = {
        str(path.relative_to(PACKAGE)): lines
        for path in sorted(PACKAGE.glob("*/**/*.py"))
        if (lines := _imports_top_package(path))
    }
    assert offenders == {}


def test_the_version_comes_from_core():
    from rolepool.core.version import VERSION

    assert rolepool.__version__ == VERSION
