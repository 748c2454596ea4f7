"""The pool's look-ahead before sending: strategy, health, context, back-off.

`Router` holds what a pool learns about its workers between requests (latency EWMAs, active
health checks) and answers two questions for `Pool.complete`: in which order to try the
workers for a request, and whether a worker should be skipped without being called (down by its
health check, backing off after a 429, or its context too short for the prompt).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping

from rolepool.core import FailedAttempt, Request, RequestRefused
from rolepool.pools.admission import FairSlots
from rolepool.pools.breaker import CircuitBreaker
from rolepool.pools.context_window import too_long
from rolepool.pools.health_checks import HealthChecks, HealthMonitor
from rolepool.pools.policy import Route
from rolepool.pools.strategies import LatencyTracker, pick_primary
from rolepool.pools.worker import Worker


class Router:
    """Per-pool routing state; the pool owns one and enters its health monitor."""

    def __init__(
        self,
        workers: Mapping[str, Worker],
        breakers: Mapping[str, CircuitBreaker],
        limiters: Mapping[str, FairSlots],
        *,
        in_flight: Callable[[str], int],
        health_checks: HealthChecks | None,
        context_lengths: Mapping[str, int] | None,
    ) -> None:
        self._workers = workers
        self._breakers = breakers
        self._limiters = limiters
        self._in_flight = in_flight
        self.latency = LatencyTracker()
        self.monitor = HealthMonitor(workers, health_checks) if health_checks else None
        self._context = dict(context_lengths or {})

    def primary(self, route: Route, request: Request, rng: random.Random) -> str:
        return pick_primary(
            route,
            rng,
            eligible=lambda name: self.skip(name, request) is None,
            busy=self.busy,
            latency=self.latency.get,
        )

    def busy(self, name: str) -> float:
        """Requests in the worker plus those waiting for one of its concurrency slots."""
        limiter = self._limiters.get(name)
        waiting = limiter.waiting if limiter is not None else 0
        return self._in_flight(name) + waiting

    def skip(self, name: str, request: Request) -> FailedAttempt | None:
        """Why `name` is not called for `request`, or None to call it."""
        if self.monitor is not None and self.monitor.is_down(name):
            return FailedAttempt(name, "down")
        if self._breakers[name].backing_off:
            return FailedAttempt(name, "rate_limited")
        reason = too_long(self._workers[name], name, request, self._context)
        if reason is not None:
            return FailedAttempt(name, "refused", RequestRefused(reason, worker=name))
        return None

    def stats(self, name: str) -> dict[str, float | int]:
        """Extra per-worker numbers for the pool's `stats` (and so `/metrics`)."""
        out: dict[str, float | int] = {"queued": self.busy(name) - self._in_flight(name)}
        ewma = self.latency.get(name)
        if ewma is not None:
            out["latency_ewma_seconds"] = ewma
        if self.monitor is not None:
            out["health_down"] = int(self.monitor.is_down(name))
        out["rate_limit_backoffs"] = self._breakers[name].backoffs
        return out
