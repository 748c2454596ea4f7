"""The one percentile rule of rolepool: linear between order statistics (numpy's default).

`RunMetrics.snapshot()` and the eval summaries both report latency percentiles; they use this
function so that the same latencies give the same p95 wherever they are read. docs/design-notes.md
says why interpolation rather than nearest rank.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (q from 0 to 100) of `values`, in any order; None when there are none."""
    data = sorted(values)
    if not data:
        return None
    pos = (len(data) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)
