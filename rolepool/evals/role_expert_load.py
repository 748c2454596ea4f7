"""Expert-load health of a MoE worker per role, from the `expert_load` each result line carries.

Each role's loads are summed over its cases, then read with the same per-layer measures the
runtime's monitoring uses (`rolepool.runtime.expert_health`): normalised entropy and busiest
expert over mean. Two eval-only measures are added. An expert is *idle* in a layer when it got
less than a tenth of an even share of that layer's tokens (zero is too strict a bar: a router that
has all but abandoned an expert still sends it a token now and then). *Divergence* between two
roles is the Jensen-Shannon divergence of their per-layer expert distributions (bits, 0 = the
same routing, 1 = disjoint experts), averaged over layers: the number that would show roles being
routed to different experts, which is what "experts specialise by role" would mean.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from rolepool.evals.result_line import ResultLine
from rolepool.evals.significance import js_divergence
from rolepool.runtime.expert_health import summarize_expert_load

IDLE_SHARE = 0.1  # of an even share


class RoleExpertLoad(BaseModel):
    """One role's expert load on one worker, summed over its cases."""

    tokens: int
    entropy_mean: float
    entropy_min: float
    max_over_mean: float
    entropy_by_layer: list[float]
    max_over_mean_by_layer: list[float]
    idle_experts: list[list[int]]
    """`[layer, expert]` pairs under `IDLE_SHARE` of an even share."""
    share: list[list[float]]
    """Each layer's share of tokens per expert."""


class RolePairDivergence(BaseModel):
    a: str
    b: str
    jsd_mean: float
    jsd: list[float]
    """Per layer, bits."""


class Divergence(BaseModel):
    pairs: list[RolePairDivergence]
    max: float | None
    measure: str


class ExpertHealth(BaseModel):
    """A MoE worker's expert load per role and how far apart the roles are routed."""

    by_role: dict[str, RoleExpertLoad]
    divergence: Divergence
    idle_rule: str


def _summed_loads(records: Sequence[ResultLine]) -> dict[str, list[list[int]]]:
    by_role: dict[str, list[list[int]]] = {}
    for r in records:
        load = r.expert_load
        if not load:
            continue
        role = r.role or "none"
        total = by_role.get(role)
        if total is None or len(total) != len(load):
            by_role[role] = [list(layer) for layer in load]
            continue
        for layer_total, layer in zip(total, load, strict=True):
            for i, count in enumerate(layer[: len(layer_total)]):
                layer_total[i] += count
    return by_role


def _idle(load: list[list[int]]) -> list[list[int]]:
    idle = []
    for li, layer in enumerate(load):
        total = sum(layer)
        if total <= 0 or not layer:
            continue
        even = total / len(layer)
        idle.extend([li, ei] for ei, count in enumerate(layer) if count < IDLE_SHARE * even)
    return idle


def _shares(load: list[list[int]]) -> list[list[float]]:
    return [[c / sum(layer) if sum(layer) else 0.0 for c in layer] for layer in load]


def expert_health(records: Sequence[ResultLine]) -> ExpertHealth | None:
    """Per-role health and the divergence between roles; None when no line carries a load."""
    loads = _summed_loads(records)
    if not loads:
        return None
    by_role: dict[str, RoleExpertLoad] = {}
    for role, load in sorted(loads.items()):
        health = summarize_expert_load(load)
        assert health is not None
        by_role[role] = RoleExpertLoad(
            tokens=sum(load[0]) if load else 0,
            entropy_mean=round(health.entropy_mean, 4),
            entropy_min=round(health.entropy_min, 4),
            max_over_mean=round(health.max_over_mean_max, 4),
            entropy_by_layer=health.entropy,
            max_over_mean_by_layer=health.max_over_mean,
            idle_experts=_idle(load),
            share=[[round(s, 5) for s in layer] for layer in _shares(load)],
        )
    pairs = []
    roles = sorted(loads)
    for i, a in enumerate(roles):
        for b in roles[i + 1 :]:
            la, lb = loads[a], loads[b]
            if len(la) != len(lb):
                continue
            per_layer = [js_divergence(x, y) for x, y in zip(la, lb, strict=True)]
            mean = sum(per_layer) / len(per_layer)
            pairs.append(RolePairDivergence(a=a, b=b, jsd_mean=mean, jsd=per_layer))
    return ExpertHealth(
        by_role=by_role,
        divergence=Divergence(
            pairs=pairs,
            max=max((p.jsd_mean for p in pairs), default=None),
            measure="Jensen-Shannon divergence of expert shares, bits, mean over layers",
        ),
        idle_rule=f"an expert with under {IDLE_SHARE:g} of an even share of a layer's tokens",
    )


def merge_counts(loads: Sequence[list[list[int]] | None]) -> list[list[int]] | None:
    """Sum several requests' `expert_load[layer][expert]` (the model calls of one case)."""
    total: list[list[int]] | None = None
    for load in loads:
        if not load:
            continue
        if total is None:
            total = [list(layer) for layer in load]
            continue
        for layer_total, layer in zip(total, load, strict=False):
            for i, count in enumerate(layer[: len(layer_total)]):
                layer_total[i] += count
    return total


__all__ = ["IDLE_SHARE", "ExpertHealth", "expert_health", "merge_counts"]
