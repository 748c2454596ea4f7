"""The built-in default pool and zoo names for TransformersWorker, on stand-in checkpoints."""

from __future__ import annotations

import shutil

import pytest

import rolepool.zoo
from rolepool.core import ConfigError, Message, Request, Sampling
from rolepool.pools.default import DEFAULT_POLICY_VERSION, default_pool, default_pool_config

pytestmark = pytest.mark.anyio


@pytest.fixture
def fake_zoo(tmp_path, monkeypatch, tiny_dense_dir, tiny_moe_dir):
    """A checkpoints directory holding the tiny test models under reference-model names."""
    shutil.copytree(tiny_moe_dir, tmp_path / "moe-s9")
    shutil.copytree(tiny_dense_dir, tmp_path / "dense-s9")
    monkeypatch.setattr(rolepool.zoo, "CHECKPOINTS", tmp_path)
    return tmp_path


async def test_default_pool_serves_moe_first_with_dense_fallback(fake_zoo):
    config = default_pool_config()
    assert set(config.workers) == {"moe", "dense"}
    pool = default_pool()
    try:
        request = Request(
            messages=[Message(role="user", content="hi")],
            role="coder",
            sampling=Sampling(max_tokens=3),
        )
        completion = await pool.complete(request)
    finally:
        await pool.aclose()
    assert completion.worker == "moe" and completion.architecture == "moe"
    assert completion.policy_version == DEFAULT_POLICY_VERSION
    assert completion.expert_load is not None


def test_transformers_worker_takes_a_zoo_name(fake_zoo):
    from rolepool.pools.transformers_worker import TransformersWorker

    for name in ("dense-s9", "zoo:dense-s9"):
        worker = TransformersWorker(name)
        assert worker.info.name == "dense-s9" and worker.info.architecture == "dense"
    with pytest.raises(ConfigError, match=r"neither a local model directory.*moe-s9"):
        TransformersWorker("zoo:nope")


def test_no_shipped_models_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(rolepool.zoo, "CHECKPOINTS", tmp_path / "empty")
    with pytest.raises(ConfigError, match="needs a shipped MoE and a dense reference model"):
        default_pool_config()


def test_the_default_pool_takes_each_architectures_best_scoring_seed(fake_zoo, tiny_moe_dir):
    import json

    def card(name: str, exact: float | None) -> None:
        scores = {} if exact is None else {"unseen_values": {"exact_call": exact}}
        (fake_zoo / name / "card.json").write_text(json.dumps({"scores": scores}))

    shutil.copytree(tiny_moe_dir, fake_zoo / "moe-s10")
    card("moe-s9", 0.1)
    card("moe-s10", 0.4)
    card("dense-s9", None)  # unscored: still chosen when it is the only dense model
    config = default_pool_config()
    assert config.workers["moe"].model == "zoo:moe-s10"
    assert config.workers["dense"].model == "zoo:dense-s9"
    card("moe-s10", 0.05)
    assert default_pool_config().workers["moe"].model == "zoo:moe-s9"
