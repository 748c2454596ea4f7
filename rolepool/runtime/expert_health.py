"""How evenly a MoE model spread its tokens over its experts, from `expert_load[layer][expert]`.

Two numbers per layer, both independent of how many tokens the request had, so requests of any
length compare: the normalised entropy of the load (1.0 = perfectly even, 0.0 = every token on one
expert) and the busiest expert's load over the mean load (1.0 = even, `n_experts` = all on one).
A router that collapses onto a few experts shows as entropy falling and max/mean rising. The
OTel exporter, the HTML viewer and `rolepool trace stats` all read the same summary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ExpertLoadSummary:
    """Per-layer health of one request's expert load, plus the worst layer for alerting."""

    layers: int
    experts: int
    entropy: list[float]  # normalised entropy per layer, 0..1
    max_over_mean: list[float]  # busiest expert / mean expert, per layer, 1..experts

    @property
    def entropy_mean(self) -> float:
        return sum(self.entropy) / len(self.entropy) if self.entropy else 1.0

    @property
    def entropy_min(self) -> float:
        return min(self.entropy, default=1.0)

    @property
    def max_over_mean_max(self) -> float:
        return max(self.max_over_mean, default=1.0)


def layer_entropy(counts: list[int]) -> float:
    """Normalised Shannon entropy; an idle layer (no tokens) counts as even, not collapsed."""
    total = sum(counts)
    if total <= 0 or len(counts) < 2:
        return 1.0
    h = -sum(c / total * math.log(c / total) for c in counts if c > 0)
    return h / math.log(len(counts))


def layer_max_over_mean(counts: list[int]) -> float:
    total = sum(counts)
    if total <= 0 or not counts:
        return 1.0
    return max(counts) / (total / len(counts))


def summarize_expert_load(expert_load: list[list[int]] | None) -> ExpertLoadSummary | None:
    """None for dense models or workers that report no load."""
    if not expert_load:
        return None
    return ExpertLoadSummary(
        layers=len(expert_load),
        experts=max((len(layer) for layer in expert_load), default=0),
        entropy=[round(layer_entropy(layer), 4) for layer in expert_load],
        max_over_mean=[round(layer_max_over_mean(layer), 4) for layer in expert_load],
    )
