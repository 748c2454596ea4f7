"""The package version, in core so that any layer can report it without importing the top package
(`rolepool/__init__.py` imports every layer). Keep it equal to pyproject.toml's `version`."""

VERSION = "0.1.0"
