"""pool.toml: the documented example loads, and invalid files give the documented errors."""

from __future__ import annotations

import re
import sys
import tomllib
import types
from pathlib import Path

import pytest

from rolepool.core import ConfigError
from rolepool.pools.config import (
    OpenAIWorkerConfig,
    TransformersWorkerConfig,
    build_pool,
    load_pool_config,
    parse_pool_config,
)
from rolepool.pools.policy import RoutingPolicy
from rolepool.pools.pool import Pool

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "pools" / "pool.toml"
DOC = ROOT / "docs" / "pool-config.md"

WORKER_A = """
[workers.a]
backend = "transformers"
model = "m"
"""
POLICY = """
[policy]
version = "1"
[policy.default]
choices = [{ worker = "a" }]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pool.toml"
    path.write_text(text)
    return path


def error_for(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_pool_config(path)
    message = str(info.value)
    assert message.startswith(str(path)), message  # every error names the file first
    return message[len(str(path)) :]


def test_example_file_loads():
    config = load_pool_config(EXAMPLE)
    assert config.path == EXAMPLE
    assert set(config.workers) == {"moe", "dense", "vllm"}
    moe, vllm = config.workers["moe"], config.workers["vllm"]
    assert isinstance(moe, TransformersWorkerConfig) and isinstance(vllm, OpenAIWorkerConfig)
    assert moe.model == str(EXAMPLE.parent / "models" / "moe")  # resolved against the file
    assert (moe.max_batch_size, moe.max_wait_ms, moe.max_concurrency) == (32, 5, 64)
    assert (vllm.url, vllm.architecture, vllm.api_key_env) == (
        "http://127.0.0.1:8000/v1",
        "moe",
        "VLLM_API_KEY",
    )
    assert config.policy.version == "2026-11-26.1"
    assert [c.weight for c in config.policy.routes["coder"].choices] == [0.9, 0.1]
    assert config.policy.default.fallbacks == ["moe"]
    assert (config.breaker.failure_threshold, config.breaker.cooldown) == (3, 30.0)
    assert (config.request_timeout, config.seed) == (30.0, 7)


def test_doc_shows_the_example_verbatim():
    block = re.search(r"```toml\n(.*?)```", DOC.read_text(), re.S)
    assert block is not None and block[1] == EXAMPLE.read_text()


def test_policy_table_round_trips_through_routing_policy():
    table = tomllib.loads(EXAMPLE.read_text())["policy"]
    policy = RoutingPolicy.from_dict(table)
    assert policy == load_pool_config(EXAMPLE).policy
    assert RoutingPolicy.from_dict(policy.to_dict()) == policy


def test_model_paths_resolve_against_the_file(tmp_path, monkeypatch):
    (tmp_path / "local-model").mkdir()
    text = WORKER_A.replace('"m"', '"local-model"') + POLICY
    text += '[workers.b]\nbackend = "transformers"\nmodel = "../elsewhere/m"\n'
    text += '[workers.c]\nbackend = "transformers"\nmodel = "zoo-moe"\n'
    monkeypatch.chdir(ROOT)
    config = load_pool_config(write(tmp_path, text))
    assert config.workers["a"].model == str(tmp_path / "local-model")
    assert config.workers["b"].model == str((tmp_path / "../elsewhere/m").resolve())
    assert config.workers["c"].model == "zoo-moe"  # a bare name: left for the zoo


@pytest.mark.parametrize(
    "text, expected",
    [
        (WORKER_A + "x = = 1\n", ", line 5, column 5: invalid TOML: Invalid value"),
        (
            WORKER_A + "max_batchsize = 3\n" + POLICY,
            ": workers.a.max_batchsize: unknown key; did you mean 'max_batch_size'?",
        ),
        (
            WORKER_A
            + POLICY
            + '[policy.routes.coder]\nchoices = [{ worker = "a", weight = -1 }]\n',
            ": policy.routes.coder.choices[0].weight: Input should be greater than 0",
        ),
        (
            '[workers.a]\nbackend = "openai"\nmodel = "m"\n' + POLICY,
            ": workers.a.url: missing required key",
        ),
        (
            '[workers.a]\nbackend = "onnx"\nmodel = "m"\n' + POLICY,
            ": workers.a.backend: unknown backend 'onnx'; use 'transformers' or 'openai'",
        ),
        (
            '[workers.a]\nmodel = "m"\n' + POLICY,
            ": workers.a.backend: missing required key",
        ),
        (
            WORKER_A + POLICY + '[policy.routes.coder]\nchoices = [{ worker = "b" }]\n',
            ": policy.routes.coder.choices[0].worker: no worker named 'b' is defined under"
            " [workers] (defined: a)",
        ),
        (
            WORKER_A + POLICY.replace("[policy.default]", "fallbacks = []\n[policy.default]"),
            ": policy.fallbacks: unknown key",
        ),
        (
            WORKER_A + POLICY + '[policy.routes.coder]\nchoices = [{ worker = "a" }]\n'
            'fallbacks = ["a"]\n',
            ": policy.routes.coder: worker 'a' appears more than once in this route",
        ),
        (
            WORKER_A + 'url = "http://x"\n' + POLICY,
            ": workers.a.url: unknown key",
        ),
        (
            '[workers.a]\nbackend = "openai"\nmodel = "m"\nurl = "localhost:8000"\n' + POLICY,
            ": workers.a.url: must start with http:// or https://",
        ),
        (WORKER_A, ": policy: missing required key"),
        (POLICY, ": workers: missing required key"),
        (
            WORKER_A + POLICY.replace('version = "1"', "") + "[breaker]\ncooldown = -1\n",
            ": 2 problems:\n  policy.version: missing required key\n"
            "  breaker.cooldown: Input should be greater than or equal to 0",
        ),
    ],
    ids=[
        "toml-syntax",
        "unknown-key",
        "negative-weight",
        "openai-without-url",
        "unknown-backend",
        "missing-backend",
        "undefined-worker",
        "unknown-policy-key",
        "duplicate-worker",
        "key-of-other-backend",
        "bad-url",
        "missing-policy",
        "missing-workers",
        "several-problems",
    ],
)
def test_invalid_files_give_the_documented_errors(tmp_path, text, expected):
    assert error_for(tmp_path, text).startswith(expected)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.toml: no such file"):
        load_pool_config(tmp_path / "nope.toml")


def test_parse_pool_config_names_its_source():
    data = tomllib.loads(WORKER_A + POLICY.replace('"a"', '"b"'))
    with pytest.raises(ConfigError, match=r"^inline: policy\.default\.choices\[0\]\.worker"):
        parse_pool_config(data, source="inline")


class FakeWorker:
    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs
        from rolepool.core import WorkerInfo

        self.info = WorkerInfo(name=kwargs["name"], model="fake")

    async def complete(self, request):  # pragma: no cover - not called
        raise NotImplementedError

    async def health(self) -> bool:
        return True


@pytest.fixture
def fake_backends(monkeypatch):
    """Stand-ins for the real backends: building a pool must not load models or open sockets."""
    tw = types.ModuleType("rolepool.pools.transformers_worker")
    tw.TransformersWorker = type("TransformersWorker", (FakeWorker,), {})
    ow = types.ModuleType("rolepool.pools.openai_worker")
    ow.OpenAIWorker = type("OpenAIWorker", (FakeWorker,), {})
    monkeypatch.setitem(sys.modules, "rolepool.pools.transformers_worker", tw)
    monkeypatch.setitem(sys.modules, "rolepool.pools.openai_worker", ow)


def test_build_pool_passes_only_the_settings_the_file_sets(fake_backends):
    pool = build_pool(EXAMPLE)
    assert isinstance(pool, Pool) and list(pool.workers) == ["moe", "dense", "vllm"]
    moe, dense, vllm = (pool.workers[n] for n in ("moe", "dense", "vllm"))
    assert moe.args == (str(EXAMPLE.parent / "models" / "moe"),)
    assert moe.kwargs == {"name": "moe", "max_batch_size": 32, "max_wait_ms": 5}
    assert dense.kwargs == {"name": "dense", "architecture": "dense"}
    assert vllm.args == ("http://127.0.0.1:8000/v1", "Qwen/Qwen3-30B-A3B")
    assert vllm.kwargs == {
        "name": "vllm",
        "architecture": "moe",
        "timeout": 60.0,
        "api_key_env": "VLLM_API_KEY",
    }
    assert pool.policy.version == "2026-11-26.1" and pool.request_timeout == 30.0
    assert pool.stats["moe"]["max_concurrency"] == 64
    assert pool.stats["vllm"]["max_concurrency"] == 16
    assert pool.stats["dense"]["max_concurrency"] is None
    assert pool.breaker("moe").settings.failure_threshold == 3


def test_a_worker_that_cannot_start_is_named(fake_backends, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("no config.json in /nowhere")

    monkeypatch.setattr(
        sys.modules["rolepool.pools.transformers_worker"], "TransformersWorker", broken
    )
    with pytest.raises(
        ConfigError, match=r"pool\.toml: workers\.moe: could not start worker: OSError"
    ):
        build_pool(EXAMPLE)
