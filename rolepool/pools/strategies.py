"""How a route picks its primary worker: by weight, by load, or by recent latency.

- `weighted` (the default, `Route.strategy` unset): a draw by the choices' weights, the canary
  split.
- `least_busy`: the choice with the fewest requests in flight plus waiting for one of its
  concurrency slots; ties are drawn by weight.
- `latency`: the choice with the lowest EWMA of its recent latencies. A choice never measured is
  tried first, and one request in `explore` is drawn by weight instead, so a worker that got
  faster (or recovered) is noticed.

Only eligible choices are picked (`eligible`: not failing its health check, its context can hold
the prompt); when none is, every choice is, so the request still meets the usual failover path.
The pool records every choice with the policy version, whatever the strategy.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Literal

from rolepool.pools.policy import Choice, Route

Strategy = Literal["weighted", "least_busy", "latency"]
STRATEGIES: tuple[Strategy, ...] = ("weighted", "least_busy", "latency")


class LatencyTracker:
    """An exponentially weighted moving average of each worker's latency: `alpha` is the weight
    of the newest sample (0.3: a worker that slows down is noticed within a few requests)."""

    def __init__(self, alpha: float = 0.3) -> None:
        if not 0 < alpha <= 1:
            raise ValueError("alpha must be in (0, 1]")
        self.alpha = alpha
        self._ewma: dict[str, float] = {}

    def observe(self, worker: str, seconds: float) -> None:
        last = self._ewma.get(worker)
        self._ewma[worker] = seconds if last is None else last + self.alpha * (seconds - last)

    def get(self, worker: str) -> float | None:
        return self._ewma.get(worker)

    def snapshot(self) -> dict[str, float]:
        return dict(self._ewma)


def pick_primary(
    route: Route,
    rng: random.Random,
    *,
    eligible: Callable[[str], bool],
    busy: Callable[[str], float],
    latency: Callable[[str], float | None],
    explore: float = 0.05,
) -> str:
    """The primary worker of `route` for one request (see the module docstring)."""
    choices = [c for c in route.choices if eligible(c.worker)] or route.choices
    if len(choices) == len(route.choices) and (route.strategy or "weighted") == "weighted":
        return route.pick(rng)  # unchanged draws for the default strategy
    if route.strategy == "least_busy":
        least = min(busy(c.worker) for c in choices)
        return _draw(rng, [c for c in choices if busy(c.worker) == least])
    if route.strategy == "latency":
        return _fastest(rng, choices, latency, explore)
    return _draw(rng, choices)


def _fastest(
    rng: random.Random,
    choices: list[Choice],
    latency: Callable[[str], float | None],
    explore: float,
) -> str:
    unmeasured = [c for c in choices if latency(c.worker) is None]
    if unmeasured:
        return _draw(rng, unmeasured)
    if len(choices) > 1 and rng.random() < explore:
        return _draw(rng, choices)
    return min(choices, key=lambda c: latency(c.worker) or 0.0).worker


def _draw(rng: random.Random, choices: list[Choice]) -> str:
    if len(choices) == 1:
        return choices[0].worker
    return rng.choices([c.worker for c in choices], weights=[c.weight for c in choices])[0]
