from __future__ import annotations

import pytest

MODEL_FIXTURES = frozenset({"tiny_dense_dir", "tiny_moe_dir"})
"""Fixtures that build a model on disk. A test that uses one, itself or through another fixture,
loads a model and is marked `slow`, so `pytest -m "not slow"` leaves it out. A test that loads a
shipped checkpoint or trains a model carries `@pytest.mark.slow` itself."""

PROCESS_MODULES = frozenset(
    {
        "test_rel_load",  # 1,000 runs; 200 requests against a serve process
        "test_rel_server_security",  # serve processes, slow and idle connections
        "test_rel_durability",  # kill -9 of processes writing the store
        "test_rel_sandbox",  # real sandboxes
        "test_sandbox",
        "test_sandbox_slots",
        "test_sandbox_under_tmp",
        "test_workflow_sandbox",
        "test_mcp_hostile",  # MCP server processes, hostile and real
        "test_mcp_servers",
        "test_mcp_serve",
        "test_mcp_config",
        "test_interop_clients",  # serve behind the openai SDK and litellm
        "test_interop_transformers_serve",
        "test_bfcl_oracle",  # BFCL's checker over every category
        "test_resume_kill",
    }
)
"""Test modules whose tests start processes, servers or sandboxes, or run a whole benchmark-sized
set: also `slow`, so the quick loop stays near a minute (their seconds add up to most of it)."""


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by mark
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    slow = pytest.mark.slow
    for item in items:
        if MODEL_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(slow)
        elif item.module is not None and item.module.__name__ in PROCESS_MODULES:
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
