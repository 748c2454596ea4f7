"""Pool: routing, failover inside a real run, breakers, timeouts, concurrency, policy audit."""

from __future__ import annotations

import time
from collections import Counter

import anyio
import pytest

from rolepool import Agent, FunctionWorker, Worker
from rolepool.core import (
    Completion,
    ConfigError,
    Message,
    Request,
    RequestRefused,
    UserError,
    WorkerError,
    WorkerInfo,
)
from rolepool.core.emit import emitting
from rolepool.pools.breaker import BreakerSettings, CircuitBreaker
from rolepool.pools.policy import Choice, Route, RoutingPolicy
from rolepool.pools.pool import Pool

pytestmark = pytest.mark.anyio


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ok(name: str, **kw) -> FunctionWorker:
    return FunctionWorker(lambda r: f"answer from {name}", name=name, **kw)


def failing(name: str) -> FunctionWorker:
    def fn(request: Request) -> str:
        raise RuntimeError(f"{name} is down")

    return FunctionWorker(fn, name=name)


def hanging(name: str) -> FunctionWorker:
    async def fn(request: Request) -> str:
        await anyio.sleep_forever()
        return ""

    return FunctionWorker(fn, name=name)


def policy(version: str = "v1", *, coder: list[str] = ("a",), fallbacks=("b",), **kw):
    route = Route(choices=[Choice(worker=w) for w in coder], fallbacks=list(fallbacks))
    return RoutingPolicy(version=version, routes={"coder": route}, **kw)


def request(role: str = "coder", text: str = "hi") -> Request:
    return Request(messages=[Message(role="user", content=text)], role=role, run_id="run_t")


def captured():
    events: list = []
    return events, emitting(events.append)


# -- routing and the audit trail ---------------------------------------------------------------


async def test_pool_is_a_worker_and_stamps_the_audit_trail():
    pool = Pool([ok("a", architecture="moe"), ok("b")], policy())
    assert isinstance(pool, Worker)
    assert pool.info.name == "pool" and pool.info.architecture == "unknown"
    completion = await pool.complete(request())
    assert completion.text == "answer from a"
    assert (completion.worker, completion.architecture, completion.policy_version) == (
        "a",
        "moe",
        "v1",
    )


async def test_architecture_comes_from_worker_info_when_the_completion_lacks_it():
    class Bare:
        info = WorkerInfo(name="x", model="m-x", architecture="dense")

        async def complete(self, request: Request) -> Completion:
            return Completion(text="hi")

        async def health(self) -> bool:
            return True

    pool = Pool({"a": Bare()}, policy(fallbacks=()))
    completion = await pool.complete(request())
    assert completion.worker == "a"  # the pool's name for the worker wins
    assert completion.architecture == "dense" and completion.model == "m-x"


async def test_no_route_for_role_is_a_clear_error():
    pool = Pool([ok("a"), ok("b")], policy())
    with pytest.raises(ConfigError, match="no route for role 'writer'"):
        await pool.complete(request("writer"))
    pool.set_policy(policy("v2", default=Route(choices=[Choice(worker="b")])))
    assert (await pool.complete(request("writer"))).worker == "b"


async def test_unknown_worker_in_policy_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        Pool([ok("a"), ok("b")], policy(coder=["a", "ghost"]))
    assert "routes.coder.choices[1].worker" in str(info.value) and "'ghost'" in str(info.value)
    pool = Pool([ok("a"), ok("b")], policy())
    with pytest.raises(ConfigError, match="fallbacks"):
        pool.set_policy(policy("v2", fallbacks=["nobody"]))
    assert pool.policy.version == "v1"


async def test_bad_pool_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="two workers are named 'a'"):
        Pool([ok("a"), ok("a")], policy(fallbacks=()))
    with pytest.raises(ConfigError, match="at least one worker"):
        Pool([], policy())
    with pytest.raises(ConfigError, match="max_concurrency"):
        Pool([ok("a"), ok("b")], policy(), max_concurrency={"zzz": 2})
    with pytest.raises(ConfigError, match="max_concurrency.a"):
        Pool([ok("a"), ok("b")], policy(), max_concurrency={"a": 0})
    with pytest.raises(ConfigError, match="request_timeout"):
        Pool([ok("a"), ok("b")], policy(), request_timeout=0)


async def test_seeded_split_is_reproducible_through_the_pool():
    split = policy(coder=["a", "b"], fallbacks=())
    pools = [Pool([ok("a"), ok("b")], split, seed=seed) for seed in (3, 3, 4)]
    runs = [[(await p.complete(request())).worker for _ in range(200)] for p in pools]
    assert runs[0] == runs[1] and runs[0] != runs[2]
    assert 60 < Counter(runs[0])["a"] < 140  # an even split, loosely


async def test_policy_swap_and_rollback_change_which_version_serves():
    pool = Pool([ok("a"), ok("b")], policy("v1"))
    v2 = policy("v2", coder=["b"], fallbacks=["a"])
    first = await pool.complete(request())
    pool.set_policy(v2)
    second = await pool.complete(request())
    assert pool.rollback().version == "v1"
    third = await pool.complete(request())
    assert [(c.worker, c.policy_version) for c in (first, second, third)] == [
        ("a", "v1"),
        ("b", "v2"),
        ("a", "v1"),
    ]
    assert pool.policy_history == []
    with pytest.raises(UserError, match="no earlier policy"):
        pool.rollback()
    with pytest.raises(ConfigError, match="already names a different policy"):
        pool.set_policy(policy("v1", coder=["b"], fallbacks=()))


# -- failover -----------------------------------------------------------------------------------


async def test_failover_inside_a_real_run_is_in_the_event_stream():
    pool = Pool([failing("a"), ok("b", architecture="dense")], policy("2026-11-26.1"))
    agent = Agent("coder-1", role="coder")
    async with agent.start("write code", worker=pool) as run:
        events = [e async for e in run.events()]
        result = await run.result()
    assert result.output == "answer from b"
    by_type = {e.type: e for e in events}
    requested, failover, routed = (
        by_type["model.requested"],
        by_type["pool.failover"],
        by_type["pool.routed"],
    )
    assert (failover.from_worker, failover.to_worker) == ("a", "b")
    assert "RuntimeError: a is down" in failover.error
    assert (routed.worker, routed.choice, routed.policy_version) == (
        "b",
        "fallback",
        "2026-11-26.1",
    )
    for event in (failover, routed):
        assert event.run_id == run.run_id and event.parent_id == requested.span_id
    completed = by_type["model.completed"]
    assert (completed.worker, completed.architecture, completed.policy_version) == (
        "b",
        "dense",
        "2026-11-26.1",
    )
    assert pool.stats["a"]["failovers"] == 1 and pool.stats["b"]["successes"] == 1


async def test_primary_route_event_says_primary():
    pool = Pool([ok("a"), ok("b")], policy())
    events, ctx = captured()
    with ctx:
        await pool.complete(request())
    assert [(e.type, e.worker, e.choice) for e in events] == [("pool.routed", "a", "primary")]


async def test_hanging_worker_times_out_and_fails_over():
    pool = Pool([hanging("a"), ok("b")], policy(), request_timeout=0.2)
    started = time.perf_counter()
    with anyio.fail_after(2):
        completion = await pool.complete(request())
    assert completion.worker == "b"
    assert 0.15 < time.perf_counter() - started < 1.5
    stats = pool.stats["a"]
    assert stats["timeouts"] == 1 and stats["failures"] == 1 and stats["in_flight"] == 0


async def test_all_workers_failing_raises_naming_each():
    pool = Pool([failing("a"), hanging("b")], policy(), request_timeout=0.1)
    events, ctx = captured()
    with ctx, anyio.fail_after(2), pytest.raises(WorkerError) as info:
        await pool.complete(request())
    message = str(info.value)
    assert "role 'coder'" in message and "policy 'v1'" in message
    assert "a: RuntimeError: a is down" in message
    assert "b: no completion within request_timeout=0.1s" in message
    failovers = [e for e in events if e.type == "pool.failover"]
    assert [(e.from_worker, e.to_worker) for e in failovers] == [("a", "b"), ("b", None)]


async def test_every_breaker_open_fails_at_once_without_calling_workers():
    a, b = hanging("a"), hanging("b")
    pool = Pool([a, b], policy(), breaker=BreakerSettings(failure_threshold=1, cooldown=60))
    pool.breaker("a").record_failure("boom")
    pool.breaker("b").record_failure("boom")
    started = time.perf_counter()
    with anyio.fail_after(1), pytest.raises(WorkerError) as info:
        await pool.complete(request())
    assert time.perf_counter() - started < 0.1
    assert "a: circuit breaker open; b: circuit breaker open" in str(info.value)
    assert a.requests == [] and b.requests == []
    assert pool.stats["a"]["rejected"] == 1


# -- breakers -----------------------------------------------------------------------------------


async def test_breaker_lifecycle_through_the_pool():
    clock = FakeClock()
    broken = {"a": True}

    def flaky(req: Request) -> str:
        if broken["a"]:
            raise RuntimeError("a is down")
        return "a is back"

    a = FunctionWorker(flaky, name="a")
    settings = BreakerSettings(failure_threshold=2, cooldown=10)
    pool = Pool([a, ok("b")], policy(), breaker=settings, clock=clock)
    events, ctx = captured()
    with ctx:
        for _ in range(2):  # two failures open the breaker
            assert (await pool.complete(request())).worker == "b"
        assert pool.breaker("a").state == "open" and len(a.requests) == 2
        assert (await pool.complete(request())).worker == "b"
        assert len(a.requests) == 2  # rejected without calling the worker
        clock.now += 10  # cooldown over: one probe, which fails -> open again
        assert (await pool.complete(request())).worker == "b"
        assert len(a.requests) == 3 and pool.breaker("a").state == "open"
        clock.now += 5
        await pool.complete(request())
        assert len(a.requests) == 3  # the new cooldown started at the failed probe
        clock.now += 5
        broken["a"] = False
        completion = await pool.complete(request())  # the probe succeeds -> closed
    assert completion.worker == "a" and pool.breaker("a").state == "closed"
    changes = [(e.worker, e.state) for e in events if e.type == "pool.breaker"]
    assert changes == [
        ("a", "open"),
        ("a", "half_open"),
        ("a", "open"),
        ("a", "half_open"),
        ("a", "closed"),
    ]
    assert all(e.run_id == "run_t" for e in events if e.type == "pool.breaker")
    stats = pool.stats["a"]
    assert (stats["breaker"], stats["breaker_state"], stats["breaker_opened"]) == ("closed", 0, 2)
    assert stats["rejected"] == 2 and stats["failures"] == 3


async def test_half_open_lets_exactly_one_probe_through():
    clock = FakeClock()
    release = anyio.Event()

    async def slow(req: Request) -> str:
        await release.wait()
        return "probe ok"

    a = FunctionWorker(slow, name="a")
    pool = Pool([a, ok("b")], policy(), breaker=BreakerSettings(failure_threshold=1), clock=clock)
    pool.breaker("a").record_failure("boom")
    clock.now += 60
    served: list[str] = []

    async def one() -> None:
        served.append((await pool.complete(request())).worker)

    async with anyio.create_task_group() as tg:
        tg.start_soon(one)
        await anyio.wait_all_tasks_blocked()
        for _ in range(3):
            await one()  # the probe is in flight: these go to the fallback
        release.set()
    assert sorted(served) == ["a", "b", "b", "b"] and len(a.requests) == 1
    assert pool.breaker("a").state == "closed"


async def test_cancelled_probe_does_not_wedge_the_breaker():
    clock = FakeClock()
    a = hanging("a")
    pool = Pool([a, ok("b")], policy(), breaker=BreakerSettings(failure_threshold=1), clock=clock)
    pool.breaker("a").record_failure("boom")
    clock.now += 60
    with anyio.move_on_after(0.05):
        await pool.complete(request())  # the probe, cancelled from outside
    assert pool.breaker("a").state == "half_open" and pool.stats["a"]["in_flight"] == 0
    with anyio.move_on_after(0.05):
        await pool.complete(request())
    assert len(a.requests) == 2  # a new probe was allowed


def test_breaker_unit_counts_only_consecutive_failures():
    clock = FakeClock()
    breaker = CircuitBreaker("w", BreakerSettings(failure_threshold=3, cooldown=5), clock=clock)
    for _ in range(2):
        breaker.record_failure("x")
    breaker.record_success()
    breaker.record_failure("x")
    breaker.record_failure("x")
    assert breaker.state == "closed" and breaker.allow()
    breaker.record_failure("x")
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 5
    assert breaker.allow() and breaker.state == "half_open"
    assert not breaker.allow()  # only one probe
    breaker.record_success()
    assert breaker.state == "closed" and breaker.transitions == {
        "closed": 1,
        "open": 1,
        "half_open": 1,
    }


# -- concurrency, health, close ----------------------------------------------------------------


async def test_per_worker_concurrency_limit_is_honoured():
    in_flight = peak = 0

    async def busy(req: Request) -> str:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await anyio.sleep(0.02)
        in_flight -= 1
        return "done"

    pool = Pool([FunctionWorker(busy, name="a"), ok("b")], policy(), max_concurrency={"a": 2})
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(pool.complete, request())
    assert peak == 2
    stats = pool.stats["a"]
    assert stats["max_in_flight"] == 2 and stats["successes"] == 10
    assert stats["max_concurrency"] == 2 and pool.stats["b"]["max_concurrency"] is None


async def test_waiting_for_a_slot_times_out_without_tripping_the_breaker():
    a = ok("a")
    settings = BreakerSettings(failure_threshold=1)
    pool = Pool([a, ok("b")], policy(), max_concurrency=1, request_timeout=0.1, breaker=settings)
    done = anyio.Event()

    async def hold_the_slot() -> None:  # stands for another request in flight on a
        async with pool._limiters["a"].hold(request()):
            await done.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold_the_slot)
        await anyio.wait_all_tasks_blocked()
        with anyio.fail_after(2):
            completion = await pool.complete(request())
        done.set()
    assert completion.worker == "b" and a.requests == []
    assert pool.breaker("a").state == "closed" and pool.stats["a"]["failures"] == 0
    assert (await pool.complete(request())).worker == "a"


async def test_health_is_any_worker_healthy_and_bounded():
    class Sick(FunctionWorker):
        async def health(self) -> bool:
            raise RuntimeError("no")

    class Stuck(FunctionWorker):
        async def health(self) -> bool:
            await anyio.sleep_forever()
            return True

    sick, stuck = Sick(str, name="a"), Stuck(str, name="b")
    pool = Pool([sick, stuck], policy(), request_timeout=0.05)
    with anyio.fail_after(2):
        assert await pool.health() is False
        assert await pool.health_by_worker() == {"a": False, "b": False}
    healthy = Pool([sick, ok("b")], policy())
    assert await healthy.health() is True


async def test_aclose_closes_workers_that_can_be_closed():
    closed: list[str] = []

    class Closable(FunctionWorker):
        async def aclose(self) -> None:
            closed.append(self.info.name)

    async with Pool([Closable(str, name="a"), ok("b")], policy()):
        pass
    assert closed == ["a"]


async def test_a_refused_request_fails_over_without_opening_the_breaker():
    """A prompt over one worker's context says nothing about that worker's health: the pool
    tries the next one, and no number of refusals opens the breaker."""

    def short_context(request: Request) -> str:
        raise RequestRefused("prompt of 900 tokens does not fit the model's context of 512")

    pool = Pool(
        [FunctionWorker(short_context, name="a"), ok("b")],
        policy(),
        breaker=BreakerSettings(failure_threshold=2),
    )
    events, capture = captured()
    with capture:
        answers = [await pool.complete(request()) for _ in range(5)]
    assert {c.worker for c in answers} == {"b"}
    stats = pool.stats["a"]
    assert (stats["refused"], stats["failures"], stats["breaker"]) == (5, 0, "closed")
    failovers = [e for e in events if e.type == "pool.failover"]
    assert len(failovers) == 5 and "RequestRefused" in failovers[0].error


async def test_a_request_every_worker_refuses_is_refused_by_type():
    """Refused by all: `RequestRefused` (the caller may shorten the prompt and ask again). One
    worker failing for another reason makes it a plain `WorkerError`."""

    def short_context(request: Request) -> str:
        raise RequestRefused("prompt of 900 tokens does not fit the model's context of 512")

    both = Pool(
        [FunctionWorker(short_context, name="a"), FunctionWorker(short_context, name="b")], policy()
    )
    with pytest.raises(RequestRefused, match="no worker could serve role 'coder'.*a: .*b: "):
        await both.complete(request())
    mixed = Pool([FunctionWorker(short_context, name="a"), failing("b")], policy())
    with pytest.raises(WorkerError) as error:
        await mixed.complete(request())
    assert not isinstance(error.value, RequestRefused)
    assert "b is down" in str(error.value)
