"""What a `Pool` checks when it is built or given a policy: worker names, concurrency limits and
choice weights. Kept apart from the pool's request path (`pool.py`): these run once, at setup,
and `pool.toml` loading (`config.py`) shares the weight check.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from rolepool.core import ConfigError
from rolepool.pools.policy import RoutingPolicy
from rolepool.pools.worker import Worker


def policy_weights(policy: RoutingPolicy) -> list[tuple[str, float]]:
    """Every choice weight of `policy`, with its key path under `policy`."""
    routes = [("default", policy.default)] if policy.default is not None else []
    routes += [(f"routes.{role}", route) for role, route in policy.routes.items()]
    return [
        (f"{where}.choices[{i}].weight", choice.weight)
        for where, route in routes
        for i, choice in enumerate(route.choices)
    ]


def check_weights(policy: RoutingPolicy, *, prefix: str = "policy") -> None:
    """Refuse a non-finite weight now: `random.choices` would refuse it at every request."""
    for where, weight in policy_weights(policy):
        if not math.isfinite(weight):
            raise ConfigError(f"must be a finite number, got {weight}", where=f"{prefix}.{where}")


def name_workers(workers: Mapping[str, Worker] | Sequence[Worker]) -> dict[str, Worker]:
    if isinstance(workers, Mapping):
        named = dict(workers)
    else:
        named = {}
        for worker in workers:
            name = worker.info.name
            if name in named:
                raise ConfigError(f"two workers are named {name!r}", where="pool workers")
            named[name] = worker
    if not named:
        raise ConfigError("a pool needs at least one worker", where="pool workers")
    for name in named:
        if not name or not name.strip():
            raise ConfigError("worker names must not be empty", where="pool workers")
    return named


def concurrency_limits(
    limits: Mapping[str, int] | int | None, workers: Mapping[str, Worker]
) -> dict[str, int]:
    if limits is None:
        return {}
    per_worker = dict.fromkeys(workers, limits) if isinstance(limits, int) else dict(limits)
    for name, value in per_worker.items():
        if name not in workers:
            raise ConfigError(f"no worker named {name!r} in the pool", where="max_concurrency")
        if not isinstance(value, int) or value < 1:
            raise ConfigError(
                f"must be an integer of at least 1, not {value!r}", where=f"max_concurrency.{name}"
            )
    return per_worker


def declared_contexts(
    lengths: Mapping[str, int] | None, workers: Mapping[str, Worker]
) -> dict[str, int]:
    """Context windows declared to the pool, by worker name: positive integers, known names."""
    declared = dict(lengths or {})
    for name, value in declared.items():
        if name not in workers:
            raise ConfigError(f"no worker named {name!r} in the pool", where="context_lengths")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(
                f"must be a positive integer, not {value!r}", where=f"context_lengths.{name}"
            )
    return declared
