"""One version: rolepool/core/version.py (what every layer reports) matches pyproject.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path

import rolepool
from rolepool.core.version import VERSION


def test_the_version_is_the_same_everywhere():
    pyproject = Path(rolepool.__file__).parent.parent / "pyproject.toml"
    declared = tomllib.loads(pyproject.read_text())["project"]["version"]
    assert VERSION == declared == rolepool.__version__
