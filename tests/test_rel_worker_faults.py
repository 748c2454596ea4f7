"""SECURITY.md, promise 1: worker faults.

A worker that raises, hangs, returns garbage, calls a tool that does not exist, returns 10 MB of
text or dies mid-batch (in-process, or `rolepool serve` killed under an HTTP worker): every
affected run fails over or fails with a typed error within its deadline, runs of other roles on
the same pool are unaffected, and breakers open and close as documented.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter

import anyio
import pytest
from rel_support import check_run_log, server_process

from rolepool import Agent, FunctionWorker, tool
from rolepool.core import (
    DeadlineExceeded,
    ModelBehaviorError,
    Request,
    RolepoolError,
    Sampling,
    WorkerError,
)
from rolepool.pools.breaker import BreakerSettings
from rolepool.pools.openai_worker import OpenAIWorker
from rolepool.pools.policy import Choice, Route, RoutingPolicy
from rolepool.pools.pool import Pool
from rolepool.runtime import Limits
from rolepool.runtime.run import resolve_store

pytestmark = [pytest.mark.anyio, pytest.mark.reliability]

executed: list[dict] = []


@tool
def lookup(key: str) -> str:
    """Look a key up.

    Args:
        key: what to look up
    """
    executed.append({"key": key})
    return f"value of {key}"


def answering(name: str) -> FunctionWorker:
    """A healthy model: one valid call, then a final answer naming itself."""

    def fn(request: Request) -> str:
        if request.messages[-1].role == "tool":
            return f"done by {name}"
        return json.dumps({"name": "lookup", "arguments": {"key": request.run_id}})

    return FunctionWorker(fn, name=name)


def faulty(kind: str) -> FunctionWorker:
    async def fn(request: Request):
        if kind == "raises":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        if kind == "hangs":
            await anyio.sleep_forever()
        if kind == "garbage":
            # A broken call attempt wrapped in binary junk (plain junk is a final answer).
            return (
                '\x00\x1b[2J<tool_call>{"name": "lookup", "arguments": {"key": }\ufffd</tool_call>'
            )

        if kind == "unknown_tool":
            return json.dumps({"name": "rm_rf", "arguments": {"path": "/"}})
        if kind == "huge":
            return "x" * 10_000_000
        raise AssertionError(kind)

    return FunctionWorker(fn, name=f"bad-{kind}")


def two_role_pool(bad: FunctionWorker, *, fallback: bool, **kw) -> Pool:
    routes = {
        "coder": Route(choices=[Choice(worker="bad")], fallbacks=["good"] if fallback else []),
        "writer": Route(choices=[Choice(worker="other")]),
    }
    workers = {"bad": bad, "good": answering("good"), "other": answering("other")}
    return Pool(workers, RoutingPolicy(version="rel.1", routes=routes), **kw)


async def run_all(pool, roles: list[str], limits: Limits):
    """Run one agent per role concurrently; returns [(role, result or error, seconds)]."""
    out = []

    async def one(i: int, role: str) -> None:
        agent = Agent(f"a{i}", role=role, tools=[lookup])
        started = time.perf_counter()
        try:
            value = await agent.run("go", worker=pool, limits=limits)
        except RolepoolError as exc:
            value = exc
        out.append((role, value, time.perf_counter() - started))

    async with anyio.create_task_group() as tg:
        for i, role in enumerate(roles):
            tg.start_soon(one, i, role)
    return out


def events_of(result_or_error):
    store = resolve_store(None)
    if isinstance(result_or_error, RolepoolError):
        return None
    return store.events(result_or_error.run_id)


@pytest.mark.parametrize("kind", ["raises", "hangs"])
async def test_broken_worker_fails_over_and_other_roles_do_not_notice(kind):
    pool = two_role_pool(faulty(kind), fallback=True, request_timeout=0.5)
    roles = ["coder", "writer"] * 8
    results = await run_all(pool, roles, Limits(deadline=20, max_retries=0))
    for role, value, seconds in results:
        assert not isinstance(value, Exception), value
        assert value.output == ("done by good" if role == "coder" else "done by other")
        if role == "writer":
            assert seconds < 10  # not held up by the broken worker's 0.5 s timeouts
        events = events_of(value)
        check_run_log(events)
        if role == "writer":
            assert not any(e.type.startswith("pool.failover") for e in events)
    stats = pool.stats
    assert stats["bad"]["breaker"] == "open" and stats["bad"]["breaker_opened"] == 1
    # Every coder run reached 'bad' once (they were concurrent): each failed over, none twice.
    assert stats["bad"]["failovers"] + stats["bad"]["rejected"] >= 8
    assert stats["other"]["failures"] == 0 and stats["good"]["failures"] == 0


@pytest.mark.parametrize("kind", ["raises", "hangs"])
async def test_without_a_fallback_the_run_fails_typed_within_its_deadline(kind):
    pool = two_role_pool(faulty(kind), fallback=False, request_timeout=30)
    limits = Limits(deadline=1.0)
    results = await run_all(pool, ["coder"] * 4 + ["writer"] * 4, limits)
    for role, value, seconds in results:
        if role == "writer":
            assert value.output == "done by other"
            continue
        expected = WorkerError if kind == "raises" else DeadlineExceeded
        assert isinstance(value, expected), value
        assert seconds < limits.deadline + 5.0  # generous: a busy machine, not a hang
    store = resolve_store(None)
    failed = [r for r in store.runs(limit=20) if r.status == "failed"]
    assert len(failed) == 4  # each failed run's log has its end


@pytest.mark.parametrize("kind", ["garbage", "unknown_tool", "huge"])
async def test_misbehaving_model_fails_typed_and_executes_nothing(kind):
    executed.clear()
    pool = two_role_pool(faulty(kind), fallback=True)
    limits = Limits(deadline=30, max_retries=1)
    started = time.perf_counter()
    results = await run_all(pool, ["coder"] * 3 + ["writer"] * 3, limits)
    assert time.perf_counter() - started < 25
    for role, value, _ in results:
        if role == "writer":
            assert value.output == "done by other"
        else:  # the model, not the worker, is at fault: no failover, a typed error
            assert isinstance(value, ModelBehaviorError), value
    assert len(executed) == 3  # only the writers' lookups ran
    assert pool.stats["bad"]["failures"] == 0 and pool.stats["bad"]["breaker"] == "closed"
    for summary in resolve_store(None).runs(limit=10):
        assert summary.status in ("finished", "failed")
    # What is stored of a 10 MB reply is the model.completed text; the invalid-call raw is cut.
    for run in resolve_store(None).runs(limit=10):
        for event in resolve_store(None).events(run.run_id):
            if event.type == "tool.call.invalid":
                assert len(event.raw or "") <= 4000


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_breaker_opens_once_probes_once_and_closes_under_concurrent_runs():
    healthy = {"ok": False}

    def flaky(request: Request) -> str:
        if not healthy["ok"]:
            raise ConnectionError("connection reset by peer")
        if request.messages[-1].role == "tool":
            return "done by flaky"
        return json.dumps({"name": "lookup", "arguments": {"key": "k"}})

    clock = FakeClock()
    routes = {"coder": Route(choices=[Choice(worker="flaky")], fallbacks=["good"])}
    pool = Pool(
        {"flaky": FunctionWorker(flaky, name="flaky"), "good": answering("good")},
        RoutingPolicy(version="rel.2", routes=routes),
        breaker=BreakerSettings(failure_threshold=3, cooldown=30),
        clock=clock,
    )
    first = await run_all(pool, ["coder"] * 10, Limits())
    assert {r[1].output for r in first} == {"done by good"}
    breaker = pool.breaker("flaky")
    assert breaker.state == "open" and breaker.transitions["open"] == 1
    calls_before = pool.stats["flaky"]["requests"]
    await run_all(pool, ["coder"] * 5, Limits())  # open: rejected without a call
    assert pool.stats["flaky"]["requests"] == calls_before

    healthy["ok"] = True
    clock.now += 31  # cooldown over: exactly one request probes, the rest see half-open
    second = await run_all(pool, ["coder"] * 10, Limits())
    assert all(not isinstance(r[1], Exception) for r in second)
    assert breaker.state == "closed" and breaker.transitions["half_open"] == 1
    served = Counter(r[1].output for r in second)
    assert served["done by flaky"] >= 1
    # The state changes are events in the runs that caused them.
    changes = []
    store = resolve_store(None)
    for run in store.runs(limit=40):
        changes += [e.state for e in store.events(run.run_id) if e.type == "pool.breaker"]
    assert sorted(changes) == ["closed", "half_open", "open"]


HTTP_WORKER = """
async def slow(request):
    await anyio.sleep(60)
    return "too late"

worker = FunctionWorker(slow, name="remote-model")
"""


async def test_serve_killed_mid_flight_every_run_fails_over_in_time():
    with server_process(HTTP_WORKER) as server:
        remote = OpenAIWorker(server.url, "remote-model", timeout=30, max_retries=1, backoff=0.05)
        routes = {
            "coder": Route(choices=[Choice(worker="remote")], fallbacks=["local"]),
            "writer": Route(choices=[Choice(worker="other")]),
        }
        workers = {"remote": remote, "local": answering("local"), "other": answering("other")}
        pool = Pool(workers, RoutingPolicy(version="rel.3", routes=routes))
        killed_at: list[float] = []

        async def kill_when_all_in_flight() -> None:
            with anyio.fail_after(15):
                while pool.stats["remote"]["in_flight"] < 10:
                    await anyio.sleep(0.02)
            killed_at.append(time.perf_counter())
            os.kill(server.pid, signal.SIGKILL)

        async with remote:
            async with anyio.create_task_group() as tg:
                tg.start_soon(kill_when_all_in_flight)
                results = await run_all(pool, ["coder"] * 10 + ["writer"] * 5, Limits(deadline=30))
    ended = time.perf_counter()
    assert killed_at and ended - killed_at[0] < 10  # at once, not at the 30 s timeout
    for role, value, _ in results:
        assert not isinstance(value, Exception), value
        assert value.output == ("done by local" if role == "coder" else "done by other")
    assert pool.stats["remote"]["failures"] == 10


async def test_in_process_worker_dying_mid_batch_fails_over_and_recovers(tiny_dense_dir):
    from rolepool.pools.transformers_worker import TransformersWorker

    local = TransformersWorker(tiny_dense_dir, name="tiny")
    await local.load()
    # The decode engine's step (or, for models it does not serve, `generate`) really runs for the
    # whole batch, then the worker "dies": every row in flight fails at once.
    engine = local._decoder
    target, attr = (engine, "_step") if engine is not None else (local, "_generate")
    real = getattr(target, attr)
    dies = {"armed": True}

    def dying(*args):
        if dies["armed"]:
            dies["armed"] = False
            real(*args)  # the batch really ran ...
            raise RuntimeError("worker process lost its device")  # ... and died at the end
        return real(*args)

    setattr(target, attr, dying)
    routes = {"coder": Route(choices=[Choice(worker="tiny")], fallbacks=["backup"])}
    backup = FunctionWorker(lambda r: "from the backup", name="backup")
    # A high threshold keeps the breaker closed, so the last request shows the worker itself
    # recovered (with the default threshold the six failures would open it, as documented).
    pool = Pool(
        {"tiny": local, "backup": backup},
        RoutingPolicy(version="rel.4", routes=routes),
        breaker=BreakerSettings(failure_threshold=100),
    )
    try:
        short = Sampling(max_tokens=6)  # noise from a random model: keep it short
        agents = [Agent(f"b{i}", role="coder", max_turns=1, sampling=short) for i in range(6)]
        results: list = []

        async def one(agent):
            try:
                results.append(await agent.run("plan the work", worker=pool))
            except RolepoolError as exc:  # the noise model may answer with an invalid call
                results.append(exc)

        async with anyio.create_task_group() as tg:
            for agent in agents:
                tg.start_soon(one, agent)
        ask = {
            "messages": [{"role": "user", "content": "hi"}],
            "role": "coder",
            "sampling": {"max_tokens": 6},
        }
        after = await pool.complete(Request.model_validate(ask))
    finally:
        await local.aclose()
    for r in results:
        assert not isinstance(r, WorkerError), r
    served_by_backup = [r for r in results if getattr(r, "output", None) == "from the backup"]
    assert len(served_by_backup) == pool.stats["tiny"]["failures"] >= 1
    assert pool.stats["tiny"]["successes"] >= len(results) - len(served_by_backup)
    assert after.worker == "tiny"  # the next batch is served by the recovered worker
