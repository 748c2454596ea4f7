"""The statistics an eval reports, written out with `math` so every number can be checked by hand:
intervals and significance tests, plus the few descriptive numbers the summary needs
(`percentile`, `mean_sd`, `js_divergence`).

- `wilson`: the Wilson score interval for a rate. Unlike the normal approximation it stays inside
  [0, 1] and is honest at 0/n and n/n, which tiny models and small suites hit all the time.
- `mcnemar_exact`: the paired exact McNemar test for two workers scored on the same cases: only the
  discordant cases (one right, the other wrong) carry information, and under "no difference" each
  falls either way with probability 1/2, so the p-value is a two-sided binomial tail.
- `permutation_test`: an exact test across *models*, not cases. Two models of one architecture
  trained with different seeds can differ by more than the architectures do (see
  docs/design-notes.md), so the unit of replication for "is MoE better than dense?" is the model.
  Pooling the cases of several models into one McNemar test treats seed luck as signal and
  overstates significance; permuting the architecture labels over the per-model rates does not.
  With few models the smallest attainable p is large (2 + 2 models: 1/3), and the test says so.
- `holm`: Holm's step-down adjustment, because a report compares every pair of workers at once.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from rolepool.runtime.percentiles import percentile  # noqa: F401  (re-exported: the one rule, shared with RunMetrics)

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for k successes in n trials; (0, 1) when n is 0."""
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # In exact arithmetic the ends are exactly 0 at k=0 and 1 at k=n; keep them so.
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def binomial_tail(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), exactly (integer arithmetic, one rounding)."""
    if k < 0:
        return 0.0
    return sum(math.comb(n, i) for i in range(min(k, n) + 1)) / 2**n


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b (only A right) and c (only B
    right): twice the smaller binomial tail, capped at 1. No discordant cases → 1."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2 * binomial_tail(min(b, c), n))


@dataclass(frozen=True)
class PermutationResult:
    difference: float  # mean(a) - mean(b)
    p_value: float  # two-sided, exact over every relabelling
    arrangements: int


def permutation_test(a: Sequence[float], b: Sequence[float]) -> PermutationResult:
    """Exact two-sided permutation test of mean(a) - mean(b): every way of splitting the pooled
    values into groups of len(a) and len(b) is equally likely under "no difference"."""
    if not a or not b:
        raise ValueError("both groups need at least one value")
    pooled = list(a) + list(b)
    total, size = sum(pooled), len(a)
    observed = sum(a) / len(a) - sum(b) / len(b)
    diffs = []
    for chosen in itertools.combinations(range(len(pooled)), size):
        group = sum(pooled[i] for i in chosen)
        diffs.append(group / size - (total - group) / len(b))
    tol = 1e-12 * max(1.0, abs(observed))
    extreme = sum(abs(d) >= abs(observed) - tol for d in diffs)
    return PermutationResult(
        difference=observed, p_value=extreme / len(diffs), arrangements=len(diffs)
    )


def min_permutation_p(n_a: int, n_b: int) -> float:
    """The smallest two-sided p an exact permutation test can reach with distinct values."""
    arrangements = math.comb(n_a + n_b, n_a)
    return (2 if n_a == n_b else 1) / arrangements


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order (monotone, capped at 1)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    m = len(p_values)
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def mean_sd(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None when it cannot be estimated)."""
    if not values:
        return None, None
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def js_divergence(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen-Shannon divergence in bits (0 = same distribution, 1 = disjoint) of two count or
    probability vectors of equal length; an all-zero vector counts as uniform."""
    if len(p) != len(q):
        raise ValueError(f"vectors differ in length: {len(p)} vs {len(q)}")
    pn, qn = _normalise(p), _normalise(q)
    m = [(a + b) / 2 for a, b in zip(pn, qn, strict=True)]

    def kl(x: list[float]) -> float:
        return sum(a * math.log2(a / b) for a, b in zip(x, m, strict=True) if a > 0)

    return max(0.0, min(1.0, (kl(pn) + kl(qn)) / 2))


def _normalise(values: Sequence[float]) -> list[float]:
    total = float(sum(values))
    if total <= 0:
        return [1 / len(values)] * len(values) if values else []
    return [v / total for v in values]
