"""SDK metrics: counted from the runs' events, readable as a dict and as Prometheus text."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rolepool import Agent, FunctionWorker, ScriptedWorker, tool
from rolepool.core import Completion, Request, ToolCall
from rolepool.pools.policy import Choice, Route, RoutingPolicy
from rolepool.pools.pool import Pool
from rolepool.runtime.run_metrics import RunMetrics, enable_metrics

pytestmark = pytest.mark.anyio


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def down(request: Request) -> str:
    raise RuntimeError("a is down")


def coder_pool(b_worker) -> Pool:
    route = Route(choices=[Choice(worker="a")], fallbacks=["b"])
    return Pool(
        {"a": FunctionWorker(down, name="a"), "b": b_worker},
        RoutingPolicy(version="v1", routes={"coder": route}),
    )


async def test_metrics_count_calls_invalid_calls_failovers_and_latency():
    replies = [
        ToolCall(id="c1", name="nope", arguments={}),  # unknown tool: invalid, fed back
        ToolCall(id="c2", name="add", arguments={"a": 2, "b": 3}),
        "The sum is 5.",
    ]
    pool = coder_pool(ScriptedWorker(replies, name="b"))
    metrics = enable_metrics(pool)
    try:
        result = await Agent("calc", role="coder", tools=[add]).run("2+3?", worker=pool)
    finally:
        metrics.disable()
    assert result.output == "The sum is 5."
    snap = metrics.snapshot()
    assert snap["runs"] == {"started": 1, "finished": 1, "failed": 0}
    coder = snap["workers"]["b"]["coder"]
    assert coder["requests"] == 3 and coder["errors"] == 0
    assert (coder["calls"], coder["invalid_calls"], coder["invalid_rate"]) == (2, 1, 0.5)
    assert coder["latency_p50"] is not None and coder["latency_p50"] <= coder["latency_p99"]
    assert coder["expert_entropy"] is None  # a test worker reports no expert load
    assert {"from": "a", "to": "b", "count": 3} in snap["failovers"]

    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    calls = {
        s.labels["outcome"]: s.value
        for s in families["rolepool_tool_calls"].samples
        if s.name.endswith("_total")
    }
    assert calls == {"valid": 1.0, "invalid_unknown_tool": 1.0}
    assert "rolepool_model_call_latency_seconds" in families
    assert any(
        s.labels == {"status": "finished"} and s.value == 1
        for s in families["rolepool_runs"].samples
    )


async def test_metrics_stop_after_disable_and_ignore_runs_they_do_not_watch():
    metrics = RunMetrics()
    agent = Agent("echo", role="writer")
    await agent.run("hi", worker=ScriptedWorker(["hello"]))
    assert metrics.snapshot()["runs"]["started"] == 0
    metrics.enable()
    await agent.run("hi", worker=ScriptedWorker(["hello"]))
    metrics.disable()
    await agent.run("hi", worker=ScriptedWorker(["hello"]))
    assert metrics.snapshot()["runs"]["started"] == 1


async def test_expert_load_entropy_is_reported_per_role_for_moe_workers():
    def moe(request: Request) -> Completion:
        return Completion(text="done", expert_load=[[5, 5, 5, 5], [20, 0, 0, 0]])

    metrics = enable_metrics()
    try:
        await Agent("w", role="writer").run("go", worker=FunctionWorker(moe, name="m"))
    finally:
        metrics.disable()
    entry = metrics.snapshot()["workers"]["m"]["writer"]
    assert entry["expert_entropy"] == pytest.approx(0.5)  # mean of an even and a collapsed layer
    text = metrics.render().decode()
    assert 'rolepool_expert_load_entropy{role="writer",worker="m"} 0.5' in text


def test_roles_beyond_the_bound_are_counted_as_other():
    metrics = RunMetrics()
    labels = {metrics._role(f"r{i}") for i in range(40)}
    assert "other" in labels and len(labels) == 33


async def test_snapshot_includes_the_pool_members_live_stats():
    class Counting(FunctionWorker):
        @property
        def stats(self):
            return {"queue_depth": 3, "batch_sizes": {1: 2, 4: 1}}

    pool = coder_pool(Counting(lambda r: "hi", name="b"))
    pool_stats = RunMetrics(pool).snapshot()["pool"]
    assert pool_stats["members"]["b"] == {"queue_depth": 3, "batch_sizes": {1: 2, 4: 1}}
    assert pool_stats["b"]["breaker"] == "closed"  # the pool's own per-member counters
    text = RunMetrics(pool).render().decode()
    assert 'rolepool_worker_queue_depth{worker="b"} 3.0' in text


def test_breaker_state_follows_the_events():
    from rolepool.core.events import BreakerChanged

    metrics = RunMetrics()
    metrics.observe(BreakerChanged(run_id="r", worker="a", state="open", reason="5 failures"))
    assert metrics.snapshot()["breakers"] == {"a": "open"}
    assert 'rolepool_breaker_open{worker="a"} 1.0' in metrics.render().decode()
    metrics.observe(BreakerChanged(run_id="r", worker="a", state="closed"))
    assert 'rolepool_breaker_open{worker="a"} 0.0' in metrics.render().decode()


def test_latency_percentiles_interpolate_as_the_eval_summaries_do():
    from rolepool.core.events import ModelCompleted
    from rolepool.runtime.percentiles import percentile

    latencies = [0.1, 0.2, 0.3, 0.4, 1.0]  # nearest rank would give 1.0 for p95
    metrics = RunMetrics()
    for latency in latencies:
        metrics.observe(
            ModelCompleted(run_id="r", agent="a", role="coder", turn=0, worker="w", latency=latency)
        )
    entry = metrics.snapshot()["workers"]["w"]["coder"]
    assert entry["latency_p95"] == pytest.approx(0.88)  # 0.4 + 0.8 * (1.0 - 0.4)
    for q in (50, 95, 99):
        assert entry[f"latency_p{q}"] == percentile(latencies, q)
