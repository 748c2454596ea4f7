"""Tenants through `rolepool serve` (issue 25.1): 401s, 429 with Retry-After, isolation of
metrics, tenant and priority on the request, the health endpoints."""

from __future__ import annotations

import logging

import httpx
import pytest

from rolepool.core import Completion, Request, Usage
from rolepool.pools.quotas import Quotas
from rolepool.pools.server import create_app
from rolepool.pools.server_tenants import quotas_of
from rolepool.pools.tenants import TenantKeys, hash_key
from rolepool.pools.testing import FunctionWorker

pytestmark = pytest.mark.anyio
HELLO = {"messages": [{"role": "user", "content": "hi"}]}
KEYS = {"alpha": "sk-alpha-0123456789", "beta": "sk-beta-0123456789", "ops": "sk-ops-987654321"}


def _keys_text(names: list[str]) -> str:
    out = []
    for name in names:
        out += ["[[tenant]]", f'name = "{name}"', f'key_sha256 = "{hash_key(KEYS[name])}"']
        if name == "beta":
            out += ['priority = "batch"', "[tenant.quota]", "requests_per_minute = 2"]
        if name == "ops":
            out += ["admin = true"]
        out.append("")
    return "\n".join(out)


@pytest.fixture
def served(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text(_keys_text(["alpha", "beta", "ops"]))
    keys = TenantKeys.load(path)
    seen: list[Request] = []

    def answer(request: Request) -> Completion:
        seen.append(request)
        return Completion(text="ok", usage=Usage(prompt_tokens=3, completion_tokens=1))

    app = create_app(FunctionWorker(answer, name="w"), tenants=keys, quotas=Quotas(quotas_of(keys)))
    return app, keys, path, seen


def _client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def _auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


async def test_a_tenant_key_serves_and_carries_tenant_and_priority(served):
    app, _, _, seen = served
    async with _client(app) as client:
        assert (
            await client.post("/v1/chat/completions", json=HELLO, headers=_auth("alpha"))
        ).status_code == 200
        assert (
            await client.post("/v1/chat/completions", json=HELLO, headers=_auth("beta"))
        ).status_code == 200
    assert [(r.tenant, r.priority) for r in seen] == [("alpha", "interactive"), ("beta", "batch")]


async def test_wrong_missing_and_deleted_keys_are_401_alike(served, caplog):
    app, keys, path, seen = served
    caplog.set_level(logging.DEBUG)
    async with _client(app) as client:
        wrong = await client.post(
            "/v1/chat/completions", json=HELLO, headers={"Authorization": "Bearer sk-nope"}
        )
        missing = await client.post("/v1/chat/completions", json=HELLO)
        path.write_text(_keys_text(["beta", "ops"]))  # alpha deleted
        keys.reload()
        deleted = await client.post("/v1/chat/completions", json=HELLO, headers=_auth("alpha"))
        metrics = await client.get("/metrics", headers=_auth("alpha"))
    for response in (wrong, missing, deleted, metrics):
        assert response.status_code == 401
        assert response.json() == wrong.json()
    assert seen == []
    assert "sk-nope" not in caplog.text and KEYS["alpha"] not in caplog.text
    assert "no valid API key" in caplog.text


async def test_quota_is_a_429_with_retry_after(served):
    app, _, _, seen = served
    async with _client(app) as client:
        codes = [
            (await client.post("/v1/chat/completions", json=HELLO, headers=_auth("beta")))
            for _ in range(3)
        ]
        other = await client.post("/v1/chat/completions", json=HELLO, headers=_auth("alpha"))
    assert [r.status_code for r in codes] == [200, 200, 429]
    assert 1 <= int(codes[2].headers["retry-after"]) <= 60
    assert codes[2].json()["error"]["code"] == "requests_per_minute"
    assert other.status_code == 200 and len(seen) == 3  # the refused one never reached the worker


async def test_a_tenant_sees_only_its_own_metrics(served):
    app, _, _, _ = served
    async with _client(app) as client:
        for name in ("alpha", "beta"):
            await client.post("/v1/chat/completions", json=HELLO, headers=_auth(name))
        alpha = (await client.get("/metrics", headers=_auth("alpha"))).text
        ops = (await client.get("/metrics", headers=_auth("ops"))).text
    assert 'tenant="alpha"' in alpha and "beta" not in alpha
    assert "rolepool_requests_total" not in alpha  # pool-wide series are the operator's
    assert 'rolepool_tenant_requests_total{status="ok",tenant="beta"}' in ops
    assert "rolepool_requests_total" in ops


async def test_health_live_and_ready_need_no_key(served):
    app, _, _, _ = served
    async with _client(app) as client:
        live = await client.get("/health/live")
        ready = await client.get("/health/ready")
        models = await client.get("/v1/models")
    assert live.status_code == 200 and ready.status_code == 200
    assert ready.json() == {"status": "ok"} and models.status_code == 401


async def test_without_keys_file_nothing_changes():
    app = create_app(FunctionWorker(lambda r: "ok", name="w"))
    async with _client(app) as client:
        response = await client.post("/v1/chat/completions", json=HELLO)
        metrics = await client.get("/metrics")
    assert response.status_code == 200 and "rolepool_requests_total" in metrics.text
