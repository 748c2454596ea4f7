"""Tenants and quotas (issue 25.1): the keys file, constant-time lookup, and each quota under
concurrency, with the daily budget kept across a restart."""

from __future__ import annotations

import anyio
import pytest

from rolepool import QuotaExceeded
from rolepool.core import Completion, LimitExceeded, Message, Request, Usage
from rolepool.core.errors import ConfigError
from rolepool.pools.policy import Choice, Route, RoutingPolicy
from rolepool.pools.pool import Pool
from rolepool.pools.quotas import Quotas, TenantQuota, reservation
from rolepool.pools.tenants import TenantKeys, hash_key
from rolepool.pools.testing import FunctionWorker


def _request(tenant: str | None = "a", max_tokens: int = 10) -> Request:
    request = Request(messages=[Message(role="user", content="hi")], tenant=tenant)
    request.sampling.max_tokens = max_tokens
    return request


def _pool(quota: TenantQuota, *, tokens: int = 5, delay: float = 0.0, path=None, clock=None):
    async def answer(request: Request) -> Completion:
        await anyio.sleep(delay)
        return Completion(text="ok", usage=Usage(prompt_tokens=tokens, completion_tokens=0))

    worker = FunctionWorker(answer, name="w")
    policy = RoutingPolicy(version="v1", default=Route(choices=[Choice(worker="w")]))
    kwargs = {"clock": clock} if clock else {}
    quotas = Quotas({"a": quota}, path=path, **kwargs)
    return Pool({"w": worker}, policy, quotas=quotas), worker


async def _burst(pool: Pool, n: int, tenant: str = "a") -> tuple[int, list[QuotaExceeded]]:
    served, refused = 0, []

    async def one() -> None:
        nonlocal served
        try:
            await pool.complete(_request(tenant))
            served += 1
        except QuotaExceeded as exc:
            refused.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
    return served, refused


def test_quota_exceeded_is_a_limit_exceeded() -> None:
    assert issubclass(QuotaExceeded, LimitExceeded) and QuotaExceeded.limit == "quota"


def test_concurrent_requests_quota_under_concurrency() -> None:
    pool, worker = _pool(TenantQuota(concurrent_requests=3), delay=0.05)
    served, refused = anyio.run(_burst, pool, 10)
    assert served == 3 and len(refused) == 7 and len(worker.requests) == 3
    assert {e.quota for e in refused} == {"concurrent_requests"}
    assert all(e.retry_after and e.retry_after > 0 for e in refused)


def test_requests_per_minute_quota() -> None:
    now = [1000.0]
    pool, worker = _pool(TenantQuota(requests_per_minute=4), clock=lambda: now[0])
    served, refused = anyio.run(_burst, pool, 9)
    assert served == 4 and len(worker.requests) == 4 and refused[0].quota == "requests_per_minute"
    assert 59 < refused[0].retry_after <= 60
    now[0] += 61  # the minute passed
    assert anyio.run(_burst, pool, 1)[0] == 1


def test_tokens_per_minute_quota_overshoots_by_at_most_one_request() -> None:
    # each request may use up to reservation() tokens; it really uses 50
    limit = 400
    pool, _ = _pool(TenantQuota(tokens_per_minute=limit), tokens=50, delay=0.01)

    async def waves() -> int:
        total = 0
        for _ in range(10):
            served, _ = await _burst(pool, 8)
            total += served
        return total

    served = anyio.run(waves)
    used = pool.quotas.usage("a")["tokens_last_minute"]
    assert used == served * 50
    assert limit <= used <= limit + reservation(_request())  # no overshoot past one request


def test_tokens_per_day_quota_holds_across_a_restart(tmp_path) -> None:
    path = tmp_path / "q.sqlite"
    pool, _ = _pool(TenantQuota(tokens_per_day=100), tokens=40, path=path)
    served, refused = anyio.run(_burst, pool, 1)
    served2, _ = anyio.run(_burst, pool, 1)
    assert served + served2 == 2
    restarted, worker = _pool(TenantQuota(tokens_per_day=100), tokens=40, path=path)
    assert restarted.quotas.usage("a")["tokens_today"] == 80
    served, refused = anyio.run(_burst, restarted, 3)
    # 80 used: one more may pass (the reservation of in-flight ones counts), never a flood
    assert served <= 1 and refused and refused[0].quota == "tokens_per_day"
    assert restarted.quotas.usage("a")["tokens_today"] <= 100 + 40


def test_a_failed_request_is_charged_no_tokens() -> None:
    def broken(request: Request) -> str:
        raise RuntimeError("boom")

    worker = FunctionWorker(broken, name="w")
    policy = RoutingPolicy(version="v1", default=Route(choices=[Choice(worker="w")]))
    pool = Pool({"w": worker}, policy, quotas=Quotas({"a": TenantQuota(tokens_per_day=10)}))
    with pytest.raises(Exception, match="boom"):
        anyio.run(pool.complete, _request())
    assert pool.quotas.usage("a") == {
        "requests_last_minute": 1,
        "tokens_last_minute": 0,
        "in_flight": 0,
        "tokens_today": 0,
    }


def test_untenanted_and_unlisted_tenants_are_not_limited() -> None:
    pool, _ = _pool(TenantQuota(concurrent_requests=1), delay=0.02)
    assert anyio.run(_burst, pool, 4, "someone-else")[0] == 4
    assert anyio.run(pool.complete, _request(None)).text == "ok"


def _keys_file(tmp_path, *tenants: tuple[str, str]) -> str:
    lines = []
    for name, key in tenants:
        lines += ["[[tenant]]", f'name = "{name}"', f'key_sha256 = "{hash_key(key)}"']
        lines += ['priority = "batch"', "[tenant.quota]", "requests_per_minute = 5", ""]
    path = tmp_path / "keys.toml"
    path.write_text("\n".join(lines))
    return str(path)


def test_keys_identify_tenants_and_reload(tmp_path) -> None:
    path = _keys_file(tmp_path, ("a", "key-a-123"), ("b", "key-b-456"))
    keys = TenantKeys.load(path)
    assert keys.identify(b"Bearer key-a-123").name == "a"
    assert keys.identify(b"Bearer key-b-456").priority == "batch"
    for wrong in (b"", b"Bearer ", b"Bearer key-a-12", b"Basic key-a-123", b"key-a-123"):
        assert keys.identify(wrong) is None
    _keys_file(tmp_path, ("b", "key-b-456"))  # a deleted
    keys.reload()
    assert keys.identify(b"Bearer key-a-123") is None
    assert keys.identify(b"Bearer key-b-456").name == "b"


def test_bad_keys_files(tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[tenant]]\nname = "a"\nkey_sha256 = "plaintext-key"\n')
    with pytest.raises(ConfigError, match="64 hex digits"):
        TenantKeys.load(bad)
    twice = _keys_file(tmp_path, ("a", "k1"), ("a", "k2"))
    with pytest.raises(ConfigError, match="same name"):
        TenantKeys.load(twice)
