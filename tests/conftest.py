from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def isolated_store(tmp_path, monkeypatch):
    """Every test writes its events to its own database, never the user's."""
    path = tmp_path / "events.db"
    monkeypatch.setenv("ROLEPOOL_EVENTS_DB", str(path))
    return path


@pytest.fixture
def anyio_backend():
    return "asyncio"
