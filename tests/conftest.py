from __future__ import annotations

import pytest

MODEL_FIXTURES = frozenset({"tiny_dense_dir", "tiny_moe_dir"})
"""Fixtures that build a model on disk. A test that uses one, itself or through another fixture,
loads a model and is marked `slow`, so `pytest -m "not slow"` leaves it out. A test that loads a
shipped checkpoint or trains a model carries `@pytest.mark.slow` itself."""


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by mark
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    slow = pytest.mark.slow
    for item in items:
        if MODEL_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(slow)


@pytest.fixture(autouse=True)
def isolated_store(tmp_path, monkeypatch):
    """Every test writes its events to its own database, never the user's."""
    path = tmp_path / "events.db"
    monkeypatch.setenv("ROLEPOOL_EVENTS_DB", str(path))
    return path


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="session")
def tiny_dense_dir(tmp_path_factory):
    """A tiny random Llama with tokenizer and chat template, saved once per test session."""
    from tiny_models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-dense"), "dense")


@pytest.fixture(scope="session")
def tiny_moe_dir(tmp_path_factory):
    """A tiny random Mixtral (4 experts, top-2) with tokenizer and chat template."""
    from tiny_models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-moe"), "moe")
