"""pool.toml's per-worker `health_check` (HTTP workers) and `context_length` (any worker): parsed,
refused with the worker and key named, and built into the pool's health monitor, its context
check and an in-process worker's own window."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import anyio
import pytest

from rolepool.core import ConfigError, Message, Request, RequestRefused, WorkerInfo
from rolepool.pools.config import build_pool, load_pool_config
from rolepool.pools.health_checks import HealthCheck, HealthCheckSettings
from rolepool.pools.policy import Choice, Route, RoutingPolicy
from rolepool.pools.pool import Pool
from rolepool.pools.testing import FunctionWorker

REMOTE = """
[workers.remote]
backend = "openai"
url = "http://127.0.0.1:9/v1"
model = "m"
"""
LOCAL = """
[workers.local]
backend = "transformers"
model = "m"
"""
POLICY = """
[policy]
version = "1"
[policy.default]
choices = [{ worker = "remote" }]
fallbacks = ["local"]
"""


def _load(tmp_path: Path, text: str):
    path = tmp_path / "pool.toml"
    path.write_text(text)
    return load_pool_config(path)


def _error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "pool.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_pool_config(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    return message[len(str(path)) :]


def test_health_check_and_context_length_parse(tmp_path):
    text = REMOTE + "context_length = 32768\nhealth_check = { interval = 0.5, failures = 2 }\n"
    text += LOCAL + "context_length = 256\n" + POLICY
    config = _load(tmp_path, text)
    remote, local = config.workers["remote"], config.workers["local"]
    assert remote.health_check == HealthCheck(interval=0.5, timeout=2.0, failures=2)
    assert (remote.context_length, local.context_length) == (32768, 256)
    assert (
        _load(tmp_path, REMOTE + "health_check = {}\n" + LOCAL + POLICY)
        .workers["remote"]
        .health_check
        == HealthCheck()
    ), "an empty table: the defaults"
    plain = _load(tmp_path, REMOTE + LOCAL + POLICY).workers["remote"]
    assert plain.health_check is None and plain.context_length is None


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            REMOTE + "health_check = { interval = 0 }\n" + LOCAL + POLICY,
            ": workers.remote.health_check.interval: Input should be greater than 0",
        ),
        (
            REMOTE + "health_check = { timeout = -1 }\n" + LOCAL + POLICY,
            ": workers.remote.health_check.timeout: Input should be greater than 0",
        ),
        (
            REMOTE + "health_check = { interval = inf }\n" + LOCAL + POLICY,
            ": workers.remote.health_check.interval: Input should be a finite number",
        ),
        (
            REMOTE + "health_check = { failures = 0 }\n" + LOCAL + POLICY,
            ": workers.remote.health_check.failures: Input should be greater than or equal to 1",
        ),
        (
            REMOTE + "health_check = { intervall = 5 }\n" + LOCAL + POLICY,
            ": workers.remote.health_check.intervall: unknown key; did you mean 'interval'? "
            "(allowed: interval, timeout, failures)",
        ),
        (
            REMOTE + 'health_check = { workers = ["remote"] }\n' + LOCAL + POLICY,
            ": workers.remote.health_check.workers: unknown key",
        ),
        (
            REMOTE + "health_check = 5\n" + LOCAL + POLICY,
            ": workers.remote.health_check: Input should be a valid dictionary",
        ),
        (
            REMOTE + LOCAL + "health_check = { interval = 5 }\n" + POLICY,
            ": workers.local.health_check: unknown key",
        ),
        (
            REMOTE + "context_length = 0\n" + LOCAL + POLICY,
            ": workers.remote.context_length: Input should be greater than or equal to 1",
        ),
        (
            REMOTE + LOCAL + 'context_length = "4k"\n' + POLICY,
            ": workers.local.context_length: Input should be a valid integer",
        ),
        (
            REMOTE + LOCAL + "context_length = 2048.0\n" + POLICY,
            ": workers.local.context_length: Input should be a valid integer",
        ),
        (
            REMOTE + "context_length = true\n" + LOCAL + POLICY,
            ": workers.remote.context_length: Input should be a valid integer",
        ),
    ],
    ids=[
        "zero-interval",
        "negative-timeout",
        "infinite-interval",
        "zero-failures",
        "misspelt-key",
        "workers-is-not-per-worker",
        "not-a-table",
        "in-process-worker",
        "zero-context",
        "string-context",
        "float-context",
        "bool-context",
    ],
)
def test_bad_health_check_and_context_length(tmp_path, text, expected):
    assert _error(tmp_path, text).startswith(expected)


class _FakeWorker:
    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs
        self.info = WorkerInfo(name=kwargs["name"], model="fake")
        self.sent: list[Request] = []
        self.healthy = True
        self.checks = 0

    async def complete(self, request):
        from rolepool.core import Completion

        self.sent.append(request)
        return Completion(text=f"from {self.info.name}")

    async def health(self) -> bool:
        self.checks += 1
        return self.healthy


@pytest.fixture
def fake_backends(monkeypatch):
    """Building the pool must not load models or open sockets."""
    tw = types.ModuleType("rolepool.pools.transformers_worker")
    tw.TransformersWorker = type("TransformersWorker", (_FakeWorker,), {})
    ow = types.ModuleType("rolepool.pools.openai_worker")
    ow.OpenAIWorker = type("OpenAIWorker", (_FakeWorker,), {})
    monkeypatch.setitem(sys.modules, "rolepool.pools.transformers_worker", tw)
    monkeypatch.setitem(sys.modules, "rolepool.pools.openai_worker", ow)


def test_build_pool_declares_an_http_workers_context_and_skips_a_prompt_over_it(
    tmp_path, fake_backends
):
    path = tmp_path / "pool.toml"
    path.write_text(REMOTE + "context_length = 50\n" + LOCAL + "context_length = 40\n" + POLICY)
    pool = build_pool(path)
    remote, local = pool.workers["remote"], pool.workers["local"]
    assert local.kwargs["context_length"] == 40, "an in-process worker keeps its own"
    assert "context_length" not in remote.kwargs
    long = Request(messages=[Message(role="user", content="x" * 400)])  # about 100 tokens
    served = anyio.run(pool.complete, long)
    assert served.worker == "local" and remote.sent == [], "not sent to the short context"
    assert pool.stats["remote"]["refused"] == 1


def test_build_pool_checks_the_http_workers_given_a_health_check(tmp_path, fake_backends):
    second = REMOTE.replace("remote", "spare")
    path = tmp_path / "pool.toml"
    path.write_text(
        REMOTE + "health_check = { interval = 0.05, timeout = 1, failures = 2 }\n"
        "context_length = 100\n" + second + LOCAL + POLICY
    )
    pool = build_pool(path)
    monitor = pool._router.monitor
    assert monitor is not None
    assert monitor.settings("remote") == HealthCheck(interval=0.05, timeout=1, failures=2)
    assert monitor.settings("spare") is None and monitor.settings("local") is None
    remote = pool.workers["remote"]
    remote.healthy = False

    async def main() -> tuple[str, bool]:
        async with pool:
            with anyio.move_on_after(30):  # two failures in a row: down (polled, not timed)
                while not monitor.is_down("remote"):
                    await anyio.sleep(0.02)
            down = monitor.is_down("remote")
            return (
                await pool.complete(Request(messages=[Message(role="user", content="hi")]))
            ).worker, down

    served, down = anyio.run(main)
    assert down and served == "local" and remote.sent == []
    assert pool.workers["spare"].checks == 0, "a worker without health_check is not probed"


def test_build_pool_without_health_checks_has_no_monitor(tmp_path, fake_backends):
    path = tmp_path / "pool.toml"
    path.write_text(REMOTE + LOCAL + POLICY)
    assert build_pool(path)._router.monitor is None


class _Flaky(FunctionWorker):
    def __init__(self, name: str) -> None:
        super().__init__(lambda r: f"from {name}", name=name)
        self.alive = True
        self.checks = 0

    async def health(self) -> bool:
        self.checks += 1
        return self.alive


def _policy(*names: str) -> RoutingPolicy:
    route = Route(choices=[Choice(worker=names[0])], fallbacks=list(names[1:]))
    return RoutingPolicy(version="v1", default=route)


def test_per_worker_checks_keep_their_own_interval_and_failures():
    fast, slow, spare = _Flaky("fast"), _Flaky("slow"), _Flaky("spare")
    fast.alive = slow.alive = False
    checks = {
        "fast": HealthCheck(interval=0.02, failures=3),
        "slow": HealthCheck(interval=10, failures=1),
    }
    pool = Pool(
        {"fast": fast, "slow": slow, "spare": spare},
        _policy("fast", "slow", "spare"),
        health_checks=checks,
    )
    monitor = pool._router.monitor

    async def main() -> tuple[bool, bool, str]:
        async with pool:
            first = monitor.is_down("fast")  # one failure of the three it takes
            with anyio.move_on_after(8):  # polled: a slow machine only takes longer
                while not (monitor.is_down("fast") and fast.checks >= 3):
                    await anyio.sleep(0.02)
            served = await pool.complete(Request(messages=[Message(role="user", content="hi")]))
            return first, monitor.is_down("fast"), served.worker

    first, later, served = anyio.run(main)
    assert not first and later, "down only after `failures` checks in a row"
    assert slow.checks == 1 and fast.checks >= 3, "each on its own interval"
    assert served == "spare" and fast.requests == [] and slow.requests == []
    assert spare.checks == 0


def test_health_checks_and_context_lengths_name_only_pool_workers():
    a = FunctionWorker(lambda r: "ok", name="a")
    with pytest.raises(ConfigError, match=r"^health_checks: no worker named 'b'"):
        Pool([a], _policy("a"), health_checks={"b": HealthCheck()})
    with pytest.raises(ConfigError, match=r"^context_lengths: no worker named 'b'"):
        Pool([a], _policy("a"), context_lengths={"b": 5})
    with pytest.raises(ConfigError, match=r"^context_lengths\.a: must be a positive integer"):
        Pool([a], _policy("a"), context_lengths={"a": 0})
    # One HealthCheckSettings for several workers still works as before.
    pool = Pool([a], _policy("a"), health_checks=HealthCheckSettings(workers=["a"]))
    assert pool._router.monitor.settings("a").interval == 5.0


def test_an_in_process_workers_context_can_be_narrowed_not_widened(tiny_dense_dir, tmp_path):
    """Through pool.toml: a narrower `context_length` is what the worker states and refuses
    beyond (before loading weights); a wider one is an error naming the worker and the key."""
    from rolepool.pools.transformers_worker import TransformersWorker

    model = TransformersWorker(tiny_dense_dir, name="m").context_length
    assert isinstance(model, int) and model > 40
    path = tmp_path / "pool.toml"
    base = f'[workers.local]\nbackend = "transformers"\nmodel = "{tiny_dense_dir}"\n'
    policy = '[policy]\nversion = "1"\n[policy.default]\nchoices = [{ worker = "local" }]\n'
    path.write_text(base + "context_length = 40\n" + policy)
    worker = build_pool(path).workers["local"]
    assert worker.context_length == 40
    with pytest.raises(RequestRefused, match="does not fit the worker's context_length of 40"):
        worker._max_tokens(Request(messages=[Message(role="user", content="hi")]), 40)
    assert worker._max_tokens(Request(messages=[Message(role="user", content="hi")]), 30) <= 10
    path.write_text(base + f"context_length = {model + 1}\n" + policy)
    with pytest.raises(ConfigError) as info:
        build_pool(path)
    assert str(info.value) == (
        f"{path}: workers.local: context_length: {model + 1} is more than the model's context "
        f"window of {model} tokens (max_position_embeddings); it can only be narrowed"
    )
