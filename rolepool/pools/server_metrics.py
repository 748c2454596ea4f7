"""Prometheus metrics for `rolepool serve`, readable from Python too.

Each app gets its own `CollectorRegistry`, so two servers in one process (tests, a pool served on
two ports) never share or collide on counters. Labels come from a bounded set: worker names are
ours, but roles arrive from clients, so unknown roles beyond `_MAX_ROLES` are counted as "other"
and a client cannot blow up the number of series.

A worker may expose `stats`: a dict of numbers (queue depth, batch sizes, breaker state); a pool
exposes a dict of such dicts keyed by member name, and its members through `workers`. They are
read at scrape time and exported as gauges (`stat_rows` says how they are named), so workers never
have to know about Prometheus; no metric of our own uses those prefixes.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

logger = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_MAX_ROLES = 32
_ROLE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_METRIC_CHARS = re.compile(r"[^a-zA-Z0-9_]")


class RoleLabels:
    """Bounded `role` label values: roles come from callers, so past `_MAX_ROLES` distinct ones
    (or a name that is not a plain identifier) they are counted as "other", and nobody can grow
    the number of series without bound."""

    def __init__(self) -> None:
        self._roles: set[str] = set()

    def __call__(self, role: str | None) -> str:
        if not role:
            return "none"
        if role in self._roles:
            return role
        if not _ROLE.match(role) or len(self._roles) >= _MAX_ROLES:
            return "other"
        self._roles.add(role)
        return role


class ServerMetrics:
    """Counters for one server: requests by worker/role/status, latency, in-flight, failures."""

    def __init__(self, worker: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.role_label = RoleLabels()
        reg = self.registry
        self.requests = Counter(
            "rolepool_requests",
            "Chat completion requests answered, by serving worker, role and outcome.",
            ["worker", "role", "status"],
            registry=reg,
        )
        self.latency = Histogram(
            "rolepool_request_latency_seconds",
            "Seconds from request to answer, by serving worker and role.",
            ["worker", "role"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.time_to_first_token = Histogram(
            "rolepool_time_to_first_token_seconds",
            "Seconds from a streamed request to its first content or tool-call delta, by role.",
            ["role"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.in_flight = Gauge(
            "rolepool_requests_in_flight", "Requests being answered now.", registry=reg
        )
        self.failures = Counter(
            "rolepool_failures",
            "Worker calls that ended in an error, by worker and error kind.",
            ["worker", "kind"],
            registry=reg,
        )
        self.tokens = Counter(
            "rolepool_tokens",
            "Tokens processed, by serving worker and kind (prompt or completion).",
            ["worker", "kind"],
            registry=reg,
        )
        self.rejected = Counter(
            "rolepool_rejected_requests",
            "Requests refused before reaching the worker, by reason (unauthorized, too_large).",
            ["reason"],
            registry=reg,
        )
        reg.register(StatsCollector(worker))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def snapshot(self) -> dict[str, float]:
        """Every sample as `name{label=value,...}` -> value, for code that reads metrics."""
        out: dict[str, float] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return out


class StatsCollector:
    """Exports `stats` of the served worker and of its members at scrape time (see module)."""

    def __init__(self, worker: Any) -> None:
        self._worker = worker

    def describe(self) -> list[Any]:
        return []  # names are only known at scrape time

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            rows = stat_rows(self._worker)
        except Exception:  # a broken stats property must not break /metrics
            logger.exception("reading worker stats failed")
            return
        families: dict[str, GaugeMetricFamily] = {}
        seen: set[tuple[str, tuple[str, ...]]] = set()
        for name, labels, value in rows:
            family = families.get(name)
            if family is None:
                doc = f"Statistic {name.split('_', 2)[2]!r} reported by the worker."
                family = families[name] = GaugeMetricFamily(name, doc, labels=list(labels))
            elif len(family.samples) and set(family.samples[0].labels) != set(labels):
                continue  # the same stat in two shapes: keep the first
            key = (name, tuple(labels.values()))
            if key not in seen:
                seen.add(key)
                family.add_metric(list(labels.values()), value)
        yield from families.values()


Row = tuple[str, dict[str, str], float]


def stat_rows(worker: Any) -> list[Row]:
    """(metric name, labels, value) for the worker's `stats` and its members' (a pool's
    `workers`). Numbers become `rolepool_worker_<stat>`; a dict of numbers keyed by integers (a
    batch-size histogram) gets a `bucket` label; a dict of dicts keyed by worker name (a pool's
    per-member counters) becomes `rolepool_pool_<stat>`. Strings and None are skipped."""
    rows = _own_rows(_name(worker), read_stats(worker))
    members = getattr(worker, "workers", None)
    if callable(members):
        members = members()
    if isinstance(members, Mapping):
        for member_name, member in members.items():
            rows.extend(_own_rows(str(member_name), read_stats(member)))
    return rows


def read_stats(worker: Any) -> dict[Any, Any]:
    stats = getattr(worker, "stats", None)
    if callable(stats):
        stats = stats()
    return stats if isinstance(stats, dict) else {}


def _own_rows(worker: str, stats: dict[Any, Any]) -> list[Row]:
    rows: list[Row] = []
    for key, value in stats.items():
        stat = _METRIC_CHARS.sub("_", str(key))
        if _is_number(value):
            rows.append((f"rolepool_worker_{stat}", {"worker": worker}, float(value)))
        elif isinstance(value, dict) and value and all(isinstance(k, int) for k in value):
            rows.extend(
                (f"rolepool_worker_{stat}", {"worker": worker, "bucket": str(k)}, float(v))
                for k, v in value.items()
                if _is_number(v)
            )
        elif isinstance(value, dict):  # a pool's per-member counters
            rows.extend(
                (f"rolepool_pool_{_METRIC_CHARS.sub('_', str(k))}", {"worker": str(key)}, float(v))
                for k, v in value.items()
                if _is_number(v)
            )
    return rows


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _name(worker: Any) -> str:
    try:
        return str(worker.info.name)
    except Exception:
        return type(worker).__name__
