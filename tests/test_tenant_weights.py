"""Tenant weights from configuration (issue 25.2): serve's keys file (`weight`, reread on SIGHUP)
and pool.toml's `[tenant_weights]` reach the FairSlots of a pool and the FairQueue of its
in-process workers, and a weighted share shows where requests wait."""

from __future__ import annotations

import os
import signal
import sys
import types
from collections import Counter
from pathlib import Path

import anyio
import pytest

from rolepool.core import Completion, ConfigError, Message, Request
from rolepool.pools.admission import check_tenant_weights
from rolepool.pools.batching import Batcher
from rolepool.pools.config import build_pool, load_pool_config
from rolepool.pools.policy import Choice, Route, RoutingPolicy
from rolepool.pools.pool import Pool
from rolepool.pools.quotas import Quotas
from rolepool.pools.server_tenants import TenantWeights, quotas_of
from rolepool.pools.tenants import TenantKeys, hash_key
from rolepool.pools.testing import FunctionWorker

POOL = """
[workers.w]
backend = "transformers"
model = "m"
max_concurrency = 1

[workers.remote]
backend = "openai"
url = "http://127.0.0.1:9/v1"
model = "m"

[policy]
version = "1"
[policy.default]
choices = [{ worker = "w" }]
"""


def _request(tenant: str, text: str = "") -> Request:
    return Request(messages=[Message(role="user", content=text)], tenant=tenant, priority="batch")


def _keys(path: Path, weights: dict[str, object | None]) -> Path:
    """A keys file of tenants `weights` names; a None weight leaves the key out."""
    lines = []
    for name, weight in weights.items():
        lines += ["[[tenant]]", f'name = "{name}"', f'key_sha256 = "{hash_key("sk-" + name)}"']
        if weight is not None:
            lines.append(f"weight = {weight}")
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def _gated_pool(weights: dict[str, float] | None = None) -> tuple[Pool, list[str], anyio.Event]:
    """A pool of one worker with one slot that holds each request until `gate` is set."""
    gate = anyio.Event()
    served: list[str] = []

    async def fn(request: Request) -> str:
        served.append(request.tenant or "")
        await gate.wait()
        return "ok"

    route = Route(choices=[Choice(worker="w")])
    pool = Pool(
        [FunctionWorker(fn, name="w")],
        RoutingPolicy(version="v1", default=route),
        max_concurrency=1,
        tenant_weights=weights,
    )
    return pool, served, gate


async def _flood(pool: Pool, gate: anyio.Event, per_tenant: int = 8) -> None:
    """One request takes the slot, then a and b each queue `per_tenant`; then all are served."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(pool.complete, _request("first"))
        await anyio.wait_all_tasks_blocked()
        for i in range(per_tenant):
            tg.start_soon(pool.complete, _request("a", str(i)))
            tg.start_soon(pool.complete, _request("b", str(i)))
        await anyio.wait_all_tasks_blocked()
        gate.set()


# -- the keys file ---------------------------------------------------------------------------------


def test_keys_file_weights_default_to_one_and_list_only_the_set_ones(tmp_path):
    keys = TenantKeys.load(_keys(tmp_path / "keys.toml", {"a": 3, "b": 0.5, "c": None}))
    assert {n: t.weight for n, t in keys.tenants.items()} == {"a": 3.0, "b": 0.5, "c": 1.0}
    assert keys.weights == {"a": 3.0, "b": 0.5}, "c gives none: the pool's own weight applies"


@pytest.mark.parametrize(
    "weight, problem",
    [
        ("0", "Input should be greater than 0"),
        ("-2", "Input should be greater than 0"),
        ('"3"', "Input should be a valid number"),
        ("true", "Input should be a valid number"),
        ("inf", "Input should be a finite number"),
        ("nan", "Input should be a finite number"),
    ],
)
def test_a_bad_weight_names_the_file_and_the_tenant(tmp_path, weight, problem):
    path = _keys(tmp_path / "keys.toml", {"ok": 2, "evals": weight})
    with pytest.raises(ConfigError) as info:
        TenantKeys.load(path)
    assert str(info.value) == f"{path}: tenant[1] ('evals').weight: {problem}"


def test_a_bad_weight_on_reload_keeps_the_old_tenants(tmp_path):
    path = _keys(tmp_path / "keys.toml", {"a": 2})
    keys = TenantKeys.load(path)
    _keys(path, {"a": -1})
    with pytest.raises(ConfigError, match="greater than 0"):
        keys.reload()
    assert keys.weights == {"a": 2.0}


# -- pool.toml -------------------------------------------------------------------------------------


def test_pool_toml_tenant_weights_parse(tmp_path):
    path = tmp_path / "pool.toml"
    path.write_text(POOL + '\n[tenant_weights]\nagents = 3\nevals = 0.5\n"team.x" = 2\n')
    assert load_pool_config(path).tenant_weights == {"agents": 3.0, "evals": 0.5, "team.x": 2.0}
    path.write_text(POOL)
    assert load_pool_config(path).tenant_weights == {}


@pytest.mark.parametrize(
    "table, expected",
    [
        ("evals = 0\n", ": tenant_weights.evals: Input should be greater than 0"),
        ('evals = "2"\n', ": tenant_weights.evals: Input should be a valid number"),
        ("evals = inf\n", ": tenant_weights.evals: Input should be a finite number"),
        ("evals = { weight = 2 }\n", ": tenant_weights.evals: Input should be a valid number"),
        ('"" = 2\n', ": tenant_weights: a tenant name must not be empty"),
    ],
)
def test_pool_toml_bad_tenant_weights(tmp_path, table, expected):
    path = tmp_path / "pool.toml"
    path.write_text(POOL + "\n[tenant_weights]\n" + table)
    with pytest.raises(ConfigError) as info:
        load_pool_config(path)
    assert str(info.value) == f"{path}{expected}"


def test_pool_toml_tenant_weights_must_be_a_table(tmp_path):
    path = tmp_path / "pool.toml"
    path.write_text("tenant_weights = 3\n" + POOL)
    with pytest.raises(ConfigError, match=r"pool\.toml: tenant_weights: Input should be a valid"):
        load_pool_config(path)


class _FakeWorker:
    """Stands in for both backends: records its arguments, loads nothing, opens nothing."""

    def __init__(self, *args, **kwargs) -> None:
        from rolepool.core import WorkerInfo

        self.args, self.kwargs = args, kwargs
        self.info = WorkerInfo(name=kwargs["name"], model="fake")
        self.tenant_weights = dict(kwargs.get("tenant_weights") or {})
        self.context_length = kwargs.get("context_length")

    def set_tenant_weights(self, weights) -> None:
        self.tenant_weights = dict(weights or {})

    async def complete(self, request):  # pragma: no cover - not called
        raise NotImplementedError

    async def health(self) -> bool:
        return True


@pytest.fixture
def fake_backends(monkeypatch):
    tw = types.ModuleType("rolepool.pools.transformers_worker")
    tw.TransformersWorker = type("TransformersWorker", (_FakeWorker,), {})
    ow = types.ModuleType("rolepool.pools.openai_worker")
    ow.OpenAIWorker = type("OpenAIWorker", (_FakeWorker,), {})
    monkeypatch.setitem(sys.modules, "rolepool.pools.transformers_worker", tw)
    monkeypatch.setitem(sys.modules, "rolepool.pools.openai_worker", ow)


def test_build_pool_gives_the_weights_to_the_slots_and_the_in_process_workers(
    tmp_path, fake_backends
):
    path = tmp_path / "pool.toml"
    path.write_text(POOL + "\n[tenant_weights]\na = 3\n")
    pool = build_pool(path)
    assert pool.tenant_weights == {"a": 3.0}
    assert pool._limiters["w"].weights == {"a": 3.0}, "the FairSlots of a limited worker"
    assert pool.workers["w"].kwargs["tenant_weights"] == {"a": 3.0}
    assert "tenant_weights" not in pool.workers["remote"].kwargs, "no queue of its own"
    path.write_text(POOL)
    assert "tenant_weights" not in build_pool(path).workers["w"].kwargs


def test_the_pool_toml_weights_give_a_weighted_share(tmp_path, fake_backends):
    """The slots `build_pool` made from the file serve a and b 3:1 while both wait."""
    path = tmp_path / "pool.toml"
    path.write_text(POOL + "\n[tenant_weights]\na = 3\n")
    pool = build_pool(path)
    served: list[str] = []
    gate: list[anyio.Event] = []

    async def hold(request: Request) -> Completion:
        served.append(request.tenant or "")
        await gate[0].wait()
        return Completion(text="ok")

    pool.workers["w"].complete = hold  # the fake's stand-in for a model

    async def main() -> None:
        gate.append(anyio.Event())
        await _flood(pool, gate[0])

    anyio.run(main)
    assert Counter(served[1:9]) == {"a": 6, "b": 2}, served


# -- in Python -------------------------------------------------------------------------------------


def test_pool_refuses_bad_weights_and_set_tenant_weights_changes_the_slots():
    route = RoutingPolicy(version="v1", default=Route(choices=[Choice(worker="w")]))
    worker = FunctionWorker(lambda r: "ok", name="w")
    with pytest.raises(ConfigError, match=r"^tenant_weights\.a: Input should be greater than 0"):
        Pool([worker], route, tenant_weights={"a": 0})
    pool = Pool([worker], route, max_concurrency=2, tenant_weights={"a": 2})
    with pytest.raises(ConfigError, match="finite"):
        pool.set_tenant_weights({"a": float("inf")})
    assert pool.tenant_weights == {"a": 2.0}, "a refused change changes nothing"
    pool.set_tenant_weights({"b": 4})
    assert pool.tenant_weights == {"b": 4.0} and pool._limiters["w"].weights == {"b": 4.0}
    assert check_tenant_weights(None) == {}


def test_set_tenant_weights_reorders_requests_already_waiting():
    pool, served, gate = _gated_pool({"a": 3})

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.complete, _request("first"))
            await anyio.wait_all_tasks_blocked()
            for i in range(8):
                tg.start_soon(pool.complete, _request("a", str(i)))
                tg.start_soon(pool.complete, _request("b", str(i)))
            await anyio.wait_all_tasks_blocked()
            pool.set_tenant_weights({"b": 3})  # while all 16 wait
            gate.set()

    anyio.run(main)
    assert Counter(served[1:9]) == {"a": 2, "b": 6}, served


def test_a_batcher_takes_new_weights():
    async def run_batch(jobs) -> None:  # pragma: no cover - never run
        pass

    batcher = Batcher(run_batch, max_batch_size=4, max_wait_s=0, tenant_weights={"a": 2})
    assert batcher.tenant_weights == {"a": 2.0}
    batcher.set_tenant_weights({"b": 5})
    assert batcher._queue.weight("b") == 5.0 and batcher._queue.weight("a") == 1.0


# -- serve: the keys file's weights, and SIGHUP -----------------------------------------------------


class _Queue:
    """An in-process worker's weights, as `TenantWeights` sees them."""

    def __init__(self, weights: dict[str, float]) -> None:
        self.tenant_weights = dict(weights)

    def set_tenant_weights(self, weights) -> None:
        self.tenant_weights = dict(weights)


def test_keys_file_weights_win_over_the_pools_own_and_fall_back_to_them(tmp_path):
    pool, _, _ = _gated_pool({"a": 5, "c": 7})
    in_process = _Queue({"a": 5, "c": 7})
    pool._workers["q"] = in_process  # a second member with a queue of its own
    path = _keys(tmp_path / "keys.toml", {"a": 2, "b": 3, "c": None})
    keys = TenantKeys.load(path)
    sync = TenantWeights(pool)
    sync.apply(keys)
    expected = {"a": 2.0, "b": 3.0, "c": 7.0}
    assert pool.tenant_weights == expected and pool._limiters["w"].weights == expected
    assert in_process.tenant_weights == expected
    _keys(path, {"a": None, "b": 3, "c": None})  # a's weight taken out: the pool's 5 again
    keys.reload()
    sync.apply(keys)
    assert pool.tenant_weights == {"a": 5.0, "b": 3.0, "c": 7.0}
    assert in_process.tenant_weights == {"a": 5.0, "b": 3.0, "c": 7.0}


def test_a_single_served_worker_gets_the_weights(tmp_path):
    worker = _Queue({})
    keys = TenantKeys.load(_keys(tmp_path / "keys.toml", {"a": 4}))
    TenantWeights(worker).apply(keys)
    assert worker.tenant_weights == {"a": 4.0}
    TenantWeights(FunctionWorker(lambda r: "ok", name="plain")).apply(keys)  # no queue: nothing


@pytest.mark.anyio
async def test_serve_applies_the_weights_and_sighup_reloads_them(tmp_path):
    """`rolepool serve --keys`: the file's weights reach the pool's FairSlots when serving starts;
    after the file is rewritten and the process gets SIGHUP, the new ones do, and requests that
    then queue are served in their proportion."""
    from serving import running

    path = _keys(tmp_path / "keys.toml", {"a": 3, "b": None})
    keys = TenantKeys.load(path)
    pool, served, gate = _gated_pool()
    async with running(pool, tenants=keys, quotas=Quotas(quotas_of(keys))):
        assert pool._limiters["w"].weights == {"a": 3.0}
        _keys(path, {"a": None, "b": 3})
        os.kill(os.getpid(), signal.SIGHUP)
        with anyio.fail_after(5):
            while pool.tenant_weights != {"b": 3.0}:
                await anyio.sleep(0.01)
        assert pool._limiters["w"].weights == {"b": 3.0}
        await _flood(pool, gate)
    assert Counter(served[1:9]) == {"a": 2, "b": 6}, served
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL, "serve takes its handler off"
