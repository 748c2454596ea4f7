"""Run and pool metrics for code that uses the SDK directly (no `rolepool serve` in between).

`rolepool serve` counts what crosses its HTTP boundary (`pools/server_metrics.py`). A program that
runs agents in-process has no such boundary, so this module counts from the event stream instead,
the source of truth: one listener per run, aggregated across runs. It sees what the server cannot,
the invalid-call rate (validation happens in the run loop) and per-role expert load.

Read it two ways: `snapshot()` is a plain nested dict for code (percentiles, by the one rule in
`percentiles.py`, are exact over the last `window` latencies of each worker and role), `render()`
is Prometheus text built from the same counts (latency as a histogram), plus the pool's live
`stats` (queue depth, batch sizes, breaker state) read at render time through the same rows the
server exports.

Labels come from a bounded set: worker names are the pool's, and roles go through `RoleLabels`
(the server's rule), so an application that invents roles cannot grow the series without bound.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from rolepool.core import Event
from rolepool.core import events as ev
from rolepool.pools.server_metrics import LATENCY_BUCKETS, RoleLabels, StatsCollector, read_stats
from rolepool.runtime import run as run_module
from rolepool.runtime.expert_health import summarize_expert_load
from rolepool.runtime.percentiles import percentile
from rolepool.runtime.stream import EventStream


@dataclass
class _Series:
    """What one (worker, role) pair did: model calls, their latencies, calls made and refused."""

    requests: int = 0
    errors: int = 0
    latencies: deque[float] = field(default_factory=deque)
    input_tokens: int = 0
    output_tokens: int = 0
    calls_parsed: int = 0
    calls_invalid: int = 0
    entropy_sum: float = 0.0
    entropy_n: int = 0


class RunMetrics:
    """Aggregates the events of every run it listens to. Thread-safe; listeners are cheap."""

    def __init__(self, pool: Any = None, *, window: int = 10_000) -> None:
        self.pool = pool
        self.window = window
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str], _Series] = {}
        self._role = RoleLabels()
        # agent span -> (worker, role) of its latest model call, to attribute its tool calls
        self._agents: dict[str, tuple[str, str]] = {}
        self._runs = {"started": 0, "finished": 0, "failed": 0}
        self._failovers: dict[tuple[str, str], int] = {}
        self._breakers: dict[str, str] = {}
        self._remove_hook: Callable[[], None] | None = None
        self._registry = self._build_registry()

    # -- wiring ---------------------------------------------------------------------------------
    def attach(self, stream: EventStream) -> None:
        """Listen to one run's stream."""
        stream.add_listener(self.observe)

    def enable(self) -> RunMetrics:
        """Listen to every run started from now on (`disable()` stops)."""
        if self._remove_hook is None:
            self._remove_hook = run_module.on_new_run(self.attach)
        return self

    def disable(self) -> None:
        if self._remove_hook is not None:
            self._remove_hook()
            self._remove_hook = None

    # -- counting -------------------------------------------------------------------------------
    def observe(self, event: Event) -> None:
        with self._lock:
            self._observe(event)

    def _observe(self, event: Event) -> None:
        if isinstance(event, ev.RunStarted):
            self._runs["started"] += 1
        elif isinstance(event, ev.RunFinished):
            self._runs["finished"] += 1
        elif isinstance(event, ev.RunFailed):
            self._runs["failed"] += 1
        elif isinstance(event, ev.ModelCompleted):
            self._model_completed(event)
        elif isinstance(event, ev.ToolCallParsed | ev.ToolCallInvalid):
            worker, role = self._agents.get(event.parent_id or "", ("unknown", "none"))
            series = self._get(worker, role)
            if isinstance(event, ev.ToolCallParsed):
                series.calls_parsed += 1
                self._m_calls.labels(worker, self._role(role), "valid").inc()
            else:
                series.calls_invalid += 1
                self._m_calls.labels(worker, self._role(role), f"invalid_{event.kind}").inc()
        elif isinstance(event, ev.PoolFailover):
            key = (event.from_worker, event.to_worker or "none")
            self._failovers[key] = self._failovers.get(key, 0) + 1
            self._m_failovers.labels(*key).inc()
        elif isinstance(event, ev.BreakerChanged):
            self._breakers[event.worker] = event.state
            self._m_breaker.labels(event.worker).set(0 if event.state == "closed" else 1)
        elif isinstance(event, ev.AgentFinished):
            self._agents.pop(event.span_id, None)

    def _model_completed(self, event: ev.ModelCompleted) -> None:
        worker = event.worker or event.model or "unknown"
        role = self._role(event.role)
        if event.parent_id:
            self._agents[event.parent_id] = (worker, role)
        series = self._get(worker, role)
        series.requests += 1
        status = "error" if event.error else "ok"
        self._m_requests.labels(worker, role, status).inc()
        if event.error:
            series.errors += 1
            return
        series.latencies.append(event.latency)
        if len(series.latencies) > self.window:
            series.latencies.popleft()
        self._m_latency.labels(worker, role).observe(event.latency)
        series.input_tokens += event.usage.prompt_tokens
        series.output_tokens += event.usage.completion_tokens
        self._m_tokens.labels(worker, "input").inc(event.usage.prompt_tokens)
        self._m_tokens.labels(worker, "output").inc(event.usage.completion_tokens)
        summary = summarize_expert_load(event.expert_load)
        if summary is not None:
            series.entropy_sum += summary.entropy_mean
            series.entropy_n += 1
            self._m_entropy.labels(worker, role).set(summary.entropy_mean)

    def _get(self, worker: str, role: str) -> _Series:
        key = (worker, role)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series()
        return series

    # -- reading --------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """`{"runs": {...}, "workers": {worker: {role: {...}}}, "failovers": [...], "breakers":
        {...}, "pool": {...}}`: counts, exact latency p50/p95/p99 (seconds), invalid-call rate,
        mean normalised expert-load entropy (MoE workers), and the pool's live stats."""
        with self._lock:
            workers: dict[str, dict[str, Any]] = {}
            for (worker, role), s in sorted(self._series.items()):
                calls = s.calls_parsed + s.calls_invalid
                workers.setdefault(worker, {})[role] = {
                    "requests": s.requests,
                    "errors": s.errors,
                    "latency_p50": percentile(s.latencies, 50),
                    "latency_p95": percentile(s.latencies, 95),
                    "latency_p99": percentile(s.latencies, 99),
                    "input_tokens": s.input_tokens,
                    "output_tokens": s.output_tokens,
                    "calls": calls,
                    "invalid_calls": s.calls_invalid,
                    "invalid_rate": s.calls_invalid / calls if calls else None,
                    "expert_entropy": s.entropy_sum / s.entropy_n if s.entropy_n else None,
                }
            out: dict[str, Any] = {
                "runs": dict(self._runs),
                "workers": workers,
                "failovers": [
                    {"from": a, "to": b, "count": n}
                    for (a, b), n in sorted(self._failovers.items())
                ],
                "breakers": dict(self._breakers),
            }
        out["pool"] = _pool_stats(self.pool)
        return out

    def render(self) -> bytes:
        """Prometheus text exposition of the counts and the pool's live stats."""
        return generate_latest(self._registry)

    def _build_registry(self) -> CollectorRegistry:
        reg = CollectorRegistry(auto_describe=True)
        self._m_requests = Counter(
            "rolepool_model_calls",
            "Model calls made by runs, by worker, role and outcome.",
            ["worker", "role", "status"],
            registry=reg,
        )
        self._m_latency = Histogram(
            "rolepool_model_call_latency_seconds",
            "Seconds per model call, by worker and role.",
            ["worker", "role"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self._m_tokens = Counter(
            "rolepool_run_tokens", "Tokens by worker and kind.", ["worker", "kind"], registry=reg
        )
        self._m_calls = Counter(
            "rolepool_tool_calls",
            "Tool calls emitted by models, by worker, role and validation outcome.",
            ["worker", "role", "outcome"],
            registry=reg,
        )
        self._m_failovers = Counter(
            "rolepool_failovers",
            "Pool failovers, from one worker to the next (`none`: nothing left).",
            ["from_worker", "to_worker"],
            registry=reg,
        )
        self._m_entropy = Gauge(
            "rolepool_expert_load_entropy",
            "Normalised expert-load entropy of the latest MoE call (1 = even, 0 = collapsed).",
            ["worker", "role"],
            registry=reg,
        )
        runs = Gauge("rolepool_runs", "Runs seen, by status.", ["status"], registry=reg)
        for status in ("started", "finished", "failed"):
            runs.labels(status).set_function(lambda s=status: self._runs[s])
        self._m_breaker = Gauge(
            "rolepool_breaker_open",
            "1 when the worker's breaker is open or half open, from the runs' events.",
            ["worker"],
            registry=reg,
        )
        if self.pool is not None:
            reg.register(StatsCollector(self.pool))
        return reg


def _pool_stats(pool: Any) -> dict[str, Any]:
    """The pool's own counters (`stats`) and each member's (`members`: a transformers worker's
    queue depth, batch sizes, decode steps), read now."""
    if pool is None:
        return {}
    try:
        out: dict[str, Any] = dict(read_stats(pool))
        members = getattr(pool, "workers", None)
        if callable(members):
            members = members()
        if members:
            out["members"] = {str(name): dict(read_stats(w)) for name, w in members.items()}
        return out
    except Exception:  # a broken stats property must not break reading metrics
        return {}


def enable_metrics(pool: Any = None, *, window: int = 10_000) -> RunMetrics:
    """Count every run started from now on; read with `.snapshot()` or `.render()`."""
    return RunMetrics(pool, window=window).enable()
