"""Routing that looks ahead (issue 25.4): least-busy, latency-aware, context-aware choice, active
health checks and breakers that tell a 429 from a failure."""

from __future__ import annotations

import anyio
import pytest

from rolepool.core import Message, RateLimited, Request, RequestRefused, WorkerError
from rolepool.pools.breaker import BreakerSettings
from rolepool.pools.health_checks import HealthCheckSettings
from rolepool.pools.policy import Choice, Route, RoutingPolicy
from rolepool.pools.pool import Pool
from rolepool.pools.strategies import LatencyTracker
from rolepool.pools.testing import FunctionWorker


def _policy(strategy: str | None, names: list[str], fallbacks: list[str] = ()) -> RoutingPolicy:
    route = Route(
        choices=[Choice(worker=n) for n in names], fallbacks=list(fallbacks), strategy=strategy
    )
    return RoutingPolicy(version="v1", default=route)


def _request(text: str = "hi") -> Request:
    return Request(messages=[Message(role="user", content=text)])


def _sleeper(name: str, seconds: float) -> FunctionWorker:
    async def answer(request: Request) -> str:
        await anyio.sleep(seconds)
        return f"from {name}"

    return FunctionWorker(answer, name=name)


def test_policy_without_strategy_keeps_its_digest() -> None:
    plain = _policy(None, ["a", "b"])
    assert "strategy" not in plain.to_dict()["default"]
    assert _policy("least_busy", ["a", "b"]).digest() != plain.digest()


def test_least_busy_sends_to_the_idle_worker() -> None:
    workers = {"a": _sleeper("a", 0.2), "b": _sleeper("b", 0.2)}
    pool = Pool(workers, _policy("least_busy", ["a", "b"]), seed=1)
    served: list[str] = []

    async def one() -> None:
        served.append((await pool.complete(_request())).worker)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(one)
                await anyio.sleep(0.01)  # each pick sees the ones before it in flight

    anyio.run(main)
    assert served.count("a") == 3 and served.count("b") == 3


def test_least_busy_counts_queued_requests() -> None:
    workers = {"a": _sleeper("a", 0.3), "b": _sleeper("b", 0.3)}
    pool = Pool(workers, _policy("least_busy", ["a", "b"]), max_concurrency=1, seed=3)
    served: list[str] = []

    async def one(pinned: str | None) -> None:
        request = _request()
        request.worker = pinned
        served.append((await pool.complete(request)).worker)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for pinned in ("a", "b", "b"):  # a: one in flight; b: one in flight, one queued
                tg.start_soon(one, pinned)
            await anyio.sleep(0.05)
            assert pool.stats["b"]["queued"] == 1
            routed.append((await pool.complete(_request())).worker)

    routed: list[str] = []
    anyio.run(main)
    assert routed == ["a"]  # behind one request, not behind one and a queued one


def test_weighted_strategy_spreads_over_both() -> None:
    workers = {"a": _sleeper("a", 0.0), "b": _sleeper("b", 0.0)}
    pool = Pool(workers, _policy("weighted", ["a", "b"]), seed=0)

    async def main() -> list[str]:
        return [(await pool.complete(_request())).worker for _ in range(40)]

    served = anyio.run(main)
    assert 5 < served.count("a") < 35


def test_latency_strategy_prefers_the_fast_worker() -> None:
    workers = {"slow": _sleeper("slow", 0.08), "fast": _sleeper("fast", 0.0)}
    pool = Pool(workers, _policy("latency", ["slow", "fast"]), seed=2)

    async def main() -> list[str]:
        return [(await pool.complete(_request())).worker for _ in range(30)]

    served = anyio.run(main)
    assert served.count("slow") <= 4  # measured once, then only explored now and then
    assert pool.stats["slow"]["latency_ewma_seconds"] > pool.stats["fast"]["latency_ewma_seconds"]


def test_latency_tracker_moves_towards_new_samples() -> None:
    tracker = LatencyTracker(alpha=0.5)
    tracker.observe("w", 1.0)
    tracker.observe("w", 3.0)
    assert tracker.get("w") == 2.0 and tracker.get("other") is None


def test_a_short_context_worker_is_skipped_unasked() -> None:
    short, long_ = _sleeper("short", 0.0), _sleeper("long", 0.0)
    short.context_length = 10  # type: ignore[attr-defined]
    pool = Pool({"short": short, "long": long_}, _policy(None, ["short"], ["long"]))
    prompt = "word " * 40  # about 50 tokens by estimate

    completion = anyio.run(pool.complete, _request(prompt))
    assert completion.worker == "long" and short.requests == []
    assert anyio.run(pool.complete, _request("hi")).worker == "short"


def test_context_lengths_declared_to_the_pool_and_all_too_short() -> None:
    a, b = _sleeper("a", 0.0), _sleeper("b", 0.0)
    pool = Pool({"a": a, "b": b}, _policy(None, ["a"], ["b"]), context_lengths={"a": 5, "b": 5})
    with pytest.raises(RequestRefused, match="does not fit"):
        anyio.run(pool.complete, _request("x" * 100))
    assert a.requests == [] and b.requests == []


class _Flaky(FunctionWorker):
    """A worker whose health the test switches; it counts the requests it was sent."""

    def __init__(self, name: str) -> None:
        super().__init__(lambda r: f"from {name}", name=name)
        self.alive = True
        self.checks = 0

    async def health(self) -> bool:
        self.checks += 1
        return self.alive


def test_health_checks_skip_a_dead_worker_and_notice_recovery() -> None:
    dead, good = _Flaky("dead"), _Flaky("good")
    dead.alive = False
    checks = HealthCheckSettings(interval=0.05, workers=["dead", "good"])
    pool = Pool(
        {"dead": dead, "good": good}, _policy(None, ["dead"], ["good"]), health_checks=checks
    )

    async def main() -> tuple[list[str], list[str]]:
        async with pool:
            before = [(await pool.complete(_request())).worker for _ in range(5)]
            dead.alive = True
            await anyio.sleep(0.2)
            after = [(await pool.complete(_request())).worker for _ in range(3)]
        return before, after

    before, after = anyio.run(main)
    assert before == ["good"] * 5 and len(dead.requests) == 3  # only after it recovered
    assert after == ["dead"] * 3 and dead.checks >= 2
    assert pool.stats["dead"]["health_down"] == 0


def test_health_checks_skip_dead_choices_when_picking() -> None:
    dead, good = _Flaky("dead"), _Flaky("good")
    dead.alive = False
    checks = HealthCheckSettings(interval=10, workers=["dead"])
    pool = Pool(
        {"dead": dead, "good": good},
        _policy(None, ["dead", "good"]),
        health_checks=checks,
        seed=0,
    )

    async def main() -> list[str]:
        async with pool:
            return [(await pool.complete(_request())).worker for _ in range(10)]

    assert anyio.run(main) == ["good"] * 10 and dead.requests == []


def _rate_limited(name: str, calls: list[str]) -> FunctionWorker:
    def answer(request: Request) -> str:
        calls.append(name)
        raise RateLimited("HTTP 429: slow down", worker=name, retry_after=30)

    return FunctionWorker(answer, name=name)


def test_a_429_backs_off_without_opening_the_breaker() -> None:
    calls: list[str] = []
    busy, spare = _rate_limited("busy", calls), _sleeper("spare", 0.0)
    settings = BreakerSettings(failure_threshold=1)
    pool = Pool(
        {"busy": busy, "spare": spare}, _policy(None, ["busy"], ["spare"]), breaker=settings
    )

    async def main() -> list[str]:
        return [(await pool.complete(_request())).worker for _ in range(4)]

    assert anyio.run(main) == ["spare"] * 4
    assert calls == ["busy"]  # backed off for its Retry-After: asked once
    assert pool.breaker("busy").state == "closed" and pool.stats["busy"]["failures"] == 0
    assert pool.stats["busy"]["rate_limit_backoffs"] == 1


def test_a_5xx_still_opens_the_breaker() -> None:
    def broken(request: Request) -> str:
        raise WorkerError("HTTP 503: down", worker="bad")

    pool = Pool(
        {"bad": FunctionWorker(broken, name="bad"), "ok": _sleeper("ok", 0.0)},
        _policy(None, ["bad"], ["ok"]),
        breaker=BreakerSettings(failure_threshold=2),
    )

    async def main() -> None:
        for _ in range(3):
            await pool.complete(_request())

    anyio.run(main)
    assert pool.breaker("bad").state == "open" and len(pool.workers["bad"].requests) == 2


def test_every_choice_is_recorded_with_the_policy_version() -> None:
    workers = {"a": _sleeper("a", 0.0), "b": _sleeper("b", 0.0)}
    for strategy in ("least_busy", "latency", "weighted"):
        pool = Pool(workers, _policy(strategy, ["a", "b"]))
        assert anyio.run(pool.complete, _request()).policy_version == "v1"


def test_pool_toml_takes_a_route_strategy(tmp_path) -> None:
    from rolepool.pools.config import load_pool_config

    path = tmp_path / "pool.toml"
    path.write_text(
        '[workers.a]\nbackend = "openai"\nurl = "http://127.0.0.1:9/v1"\nmodel = "m"\n'
        '[policy]\nversion = "v1"\n'
        '[policy.default]\nchoices = [{ worker = "a" }]\nstrategy = "latency"\n'
    )
    assert load_pool_config(path).policy.default.strategy == "latency"


@pytest.mark.slow
def test_an_in_process_worker_states_its_context_window(tiny_dense_dir):
    """TransformersWorker tells a pool its context (max_position_embeddings), so a prompt far
    past it is skipped before it is sent (context_window.too_long)."""
    from rolepool.pools.context_window import too_long
    from rolepool.pools.transformers_worker import TransformersWorker

    worker = TransformersWorker(tiny_dense_dir, name="tiny")
    limit = worker.context_length
    assert isinstance(limit, int) and limit > 0
    huge = Request(messages=[Message(role="user", content="word " * (limit * 4))])
    small = Request(messages=[Message(role="user", content="hi")])
    assert "not sent" in too_long(worker, "tiny", huge, {})
    assert too_long(worker, "tiny", small, {}) is None
