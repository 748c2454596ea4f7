"""`summary.json`: per-worker rates with intervals, latency, speed, MoE expert-load health, and the
comparisons between workers and between architectures, all computed from `results.jsonl` lines.

Summaries are rebuilt from the results file every time, never updated in place, so a resumed or
partly re-run eval summarises exactly what the file holds. The summary's typed shape, and the
keys that are stable, are in `summary_types`.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

from rolepool.evals.bfcl.groups import bfcl_summary
from rolepool.evals.decoding import decoding_summary, split_variant
from rolepool.evals.result_line import ResultLine
from rolepool.evals.role_expert_load import expert_health
from rolepool.evals.significance import (
    holm,
    mcnemar_exact,
    mean_sd,
    min_permutation_p,
    percentile,
    permutation_test,
    wilson,
)
from rolepool.evals.summary_types import (
    ArchitectureComparison,
    ArchitectureSummary,
    Comparison,
    GroupStats,
    Latency,
    MetricCells,
    ModelsRate,
    Pooled,
    Rate,
    Summary,
    Throughput,
    WorkerComparison,
    WorkerSummary,
)

SCHEMA_VERSION = 1
ALPHA = 0.05
# Summary metric name (the stable public one) -> the `Scores` field it is read from.
METRICS: dict[str, str] = {
    "exact_acc": "exact",
    "name_acc": "name_correct",
    "json_valid": "json_valid",
    "schema_valid": "schema_valid",
    "schema_valid_first_try": "schema_valid_first_try",
    "no_call_acc": "no_call_correct",
    "parsed": "parsed",
    "false_call": "false_call",
}
METRIC_HELP = {
    "exact_acc": "the call(s) match the expected ones exactly (or no call when none is expected)",
    "name_acc": "the right tool names (cases that expect a call)",
    "json_valid": "the output was JSON-valid tool-call syntax (cases that expect a call)",
    "schema_valid": "the calls satisfied their schemas, retries allowed",
    "schema_valid_first_try": "the calls satisfied their schemas on the first try",
    "no_call_acc": "no call where none is expected",
    "parsed": "the output parsed into at least one call (cases that expect a call)",
    "false_call": "a call where none is expected (lower is better)",
}
COMPARED = ("exact_acc", "name_acc", "schema_valid")
NO_ROLE = "none"


def metric_value(record: ResultLine, metric: str) -> bool | None:
    """The record's score for a summary metric, or None when it does not apply."""
    value = getattr(record.scores, METRICS[metric])
    return None if value is None else bool(value)


def rate(records: Sequence[ResultLine], metric: str) -> Rate:
    values = [v for r in records if (v := metric_value(r, metric)) is not None]
    k, n = sum(values), len(values)
    lo, hi = wilson(k, n)
    return Rate(rate=k / n if n else None, k=k, n=n, ci95=[lo, hi])


def group_stats(records: Sequence[ResultLine]) -> GroupStats:
    """n, every metric with its Wilson interval, latency percentiles and tokens/s."""
    latencies = [float(r.latency) for r in records]
    completion = sum(r.usage.completion_tokens for r in records)
    busy = sum(latencies)
    return GroupStats(
        n=len(records),
        **{metric: rate(records, metric) for metric in METRICS},
        latency=Latency(
            p50=percentile(latencies, 50),
            p95=percentile(latencies, 95),
            p99=percentile(latencies, 99),
            mean=busy / len(latencies) if latencies else None,
        ),
        # Per request as the caller sees it (batching waits included), so any grouping compares.
        tokens_per_s=completion / busy if busy > 0 else None,
        errors=sum(1 for r in records if r.error),
        worker_errors=sum(1 for r in records if r.error_kind == "worker"),
        refused=sum(1 for r in records if r.error_kind == "refused"),
    )


def _by(
    records: Iterable[ResultLine], group_of: Callable[[ResultLine], str | None]
) -> dict[str, list[ResultLine]]:
    groups: dict[str, list[ResultLine]] = defaultdict(list)
    for r in records:
        groups[group_of(r) or NO_ROLE].append(r)
    return dict(sorted(groups.items()))


def _active_seconds(records: Sequence[ResultLine]) -> float:
    """Wall time during which the worker had at least one case in flight (union of intervals),
    so throughput stays right across resumed sessions and idle gaps."""
    spans = sorted(
        (r.started, r.ended) for r in records if r.started is not None and r.ended is not None
    )
    total, cur_start, cur_end = 0.0, 0.0, None
    for start, end in spans:
        if cur_end is None or start > cur_end:
            if cur_end is not None:
                total += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    if cur_end is not None:
        total += cur_end - cur_start
    return total


def worker_summary(records: Sequence[ResultLine]) -> WorkerSummary:
    first = records[0]
    active = _active_seconds(records)
    tokens = sum(r.usage.completion_tokens for r in records)
    return WorkerSummary(
        model=first.model,
        architecture=first.architecture,
        overall=group_stats(records),
        by_role={k: group_stats(v) for k, v in _by(records, lambda r: r.role).items()},
        by_category={k: group_stats(v) for k, v in _by(records, lambda r: r.category).items()},
        throughput=Throughput(
            cases_per_s=len(records) / active if active > 0 else None,
            tokens_per_s=tokens / active if active > 0 else None,
            active_s=active,
        ),
        expert_health=expert_health(records),
    )


def _model_rates(
    by_worker: dict[str, list[ResultLine]], names: Sequence[str], metric: str
) -> tuple[dict[str, float | None], int]:
    """Each model's rate on the cases that every model in `names` was scored on."""
    per: dict[str, dict[tuple[str, str], bool]] = {}
    for name in names:
        per[name] = {
            r.case_key: v for r in by_worker[name] if (v := metric_value(r, metric)) is not None
        }
    common = set.intersection(*(set(p) for p in per.values())) if per else set()
    return {
        name: (sum(per[name][c] for c in common) / len(common) if common else None)
        for name in names
    }, len(common)


def _models_rate(groups: dict[str, list[ResultLine]], names: list[str], metric: str) -> ModelsRate:
    per = {name: rate(groups.get(name, []), metric) for name in names}
    rates = [p.rate for p in per.values() if p.rate is not None]
    m, sd = mean_sd(rates)
    k, n = sum(p.k for p in per.values()), sum(p.n for p in per.values())
    return ModelsRate(
        rate=m,
        sd=sd,
        per_model={name: p.rate for name, p in per.items()},
        pooled=Pooled(k=k, n=n, ci95=list(wilson(k, n))),
    )


def architecture_summary(
    by_worker: dict[str, list[ResultLine]], names: list[str]
) -> ArchitectureSummary:
    """Across-model aggregate: each rate is the mean of the models' rates, with their sd."""

    def aggregate(groups: dict[str, list[ResultLine]]) -> MetricCells[ModelsRate]:
        return MetricCells[ModelsRate](
            n=sum(len(v) for v in groups.values()),
            **{metric: _models_rate(groups, names, metric) for metric in METRICS},
        )

    roles = sorted({r.role or NO_ROLE for name in names for r in by_worker[name]})
    return ArchitectureSummary(
        models=names,
        overall=aggregate({n: by_worker[n] for n in names}),
        by_role={
            role: aggregate(
                {n: [r for r in by_worker[n] if (r.role or NO_ROLE) == role] for n in names}
            )
            for role in roles
        },
    )


def _pair_comparison(
    a: str, b: str, ra: list[ResultLine], rb: list[ResultLine], metric: str
) -> WorkerComparison:
    va = {r.case_key: v for r in ra if (v := metric_value(r, metric)) is not None}
    vb = {r.case_key: v for r in rb if (v := metric_value(r, metric)) is not None}
    shared = sorted(set(va) & set(vb))
    both = sum(va[c] and vb[c] for c in shared)
    a_only = sum(va[c] and not vb[c] for c in shared)
    b_only = sum(vb[c] and not va[c] for c in shared)
    n = len(shared)
    return WorkerComparison(
        metric=metric,
        a=a,
        b=b,
        n=n,
        both=both,
        a_only=a_only,
        b_only=b_only,
        neither=n - both - a_only - b_only,
        rate_a=(both + a_only) / n if n else None,
        rate_b=(both + b_only) / n if n else None,
        p_value=mcnemar_exact(a_only, b_only),
        test="exact McNemar (two-sided binomial on the discordant cases)",
    )


def _word_pair(c: WorkerComparison, family: int) -> None:
    a, b, m = c.a, c.b, c.metric
    if c.n == 0:
        c.verdict = "no shared cases"
        c.text = f"{a} vs {b} ({m}): no cases scored on both, nothing to compare."
        return
    better = a if c.a_only > c.b_only else b
    detected = c.p_holm < ALPHA
    c.verdict = f"{better} higher" if detected else "no detectable difference"
    c.text = (
        f"{a} vs {b} on {c.n} shared cases ({m}): {a} alone was right on {c.a_only}, "
        f"{b} alone on {c.b_only}; exact McNemar p={c.p_value:.3g} "
        f"(Holm-adjusted over {family} comparisons: {c.p_holm:.3g}) → "
        + (
            f"{better} is better on these cases."
            if detected
            else "no detectable difference between these two models."
        )
    )


def _arch_comparison(
    by_worker: dict[str, list[ResultLine]], arch: dict[str, list[str]], a: str, b: str, metric: str
) -> ArchitectureComparison:
    rates, n_cases = _model_rates(by_worker, arch[a] + arch[b], metric)
    ra = [r for n in arch[a] if (r := rates[n]) is not None]
    rb = [r for n in arch[b] if (r := rates[n]) is not None]
    (ma, sa), (mb, sb) = mean_sd(ra), mean_sd(rb)
    out = ArchitectureComparison(
        metric=metric,
        a=a,
        b=b,
        models_a=arch[a],
        models_b=arch[b],
        n_cases=n_cases,
        rates_a=ra,
        rates_b=rb,
        mean_a=ma,
        mean_b=mb,
        sd_a=sa,
        sd_b=sb,
        test="exact permutation test of the mean rate across models (the model is the unit)",
    )
    fmt = _fmt_group
    if len(ra) < 2 or len(rb) < 2 or not n_cases:
        out.verdict = "cannot tell"
        out.text = (
            f"{a} vs {b} ({metric}): {fmt(a, ra, sa)} vs {fmt(b, rb, sb)}. An architecture "
            "comparison needs at least 2 models of each (different seeds differ by more than "
            "sampling noise), so a gap here cannot be told apart from model-to-model spread."
        )
        return out
    result = permutation_test(ra, rb)
    floor = min_permutation_p(len(ra), len(rb))
    out.p_value, out.min_p, out.difference = result.p_value, floor, result.difference
    detected = result.p_value < ALPHA
    higher = a if result.difference > 0 else b
    out.verdict = f"{higher} higher" if detected else "no detectable difference"
    reach = (
        f" With {len(ra)} and {len(rb)} models the smallest p this test can ever give is "
        f"{floor:.2g}, so it cannot reach {ALPHA}: evaluate more models per architecture "
        "(4 and 4 can)."
        if floor >= ALPHA
        else ""
    )
    out.text = (
        f"{a} vs {b} ({metric}): {fmt(a, ra, sa)} vs {fmt(b, rb, sb)} on {n_cases} shared cases; "
        f"across-model permutation test p={result.p_value:.2g} → "
        + (f"{higher} is higher." if detected else "no detectable difference.")
        + reach
    )
    return out


def _fmt_group(name: str, rates: list[float], sd: float | None) -> str:
    if not rates:
        return f"{name} (no models)"
    mean = sum(rates) / len(rates)
    spread = f" ± {sd:.3f}" if sd is not None else ""
    return f"{name} {mean:.3f}{spread} ({len(rates)} model{'s' if len(rates) != 1 else ''})"


def comparisons(
    by_worker: dict[str, list[ResultLine]], arch: dict[str, list[str]]
) -> list[Comparison]:
    names = sorted(by_worker)
    pairs = [
        _pair_comparison(a, b, by_worker[a], by_worker[b], m)
        for m in COMPARED
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    ]
    for c, p in zip(pairs, holm([c.p_value for c in pairs]), strict=True):
        c.p_holm = p
        _word_pair(c, len(pairs))
    archs = sorted(a for a in arch if a != "unknown")
    across = [
        _arch_comparison(by_worker, arch, a, b, m)
        for m in COMPARED
        for i, a in enumerate(archs)
        for b in archs[i + 1 :]
    ]
    return [*across, *pairs]


def build_summary(records: Sequence[ResultLine], *, suites: Sequence[str] = ()) -> Summary:
    """The whole summary.json from result lines (any order, any mix of workers and suites)."""
    by_worker: dict[str, list[ResultLine]] = defaultdict(list)
    for r in records:
        by_worker[r.worker].append(r)
    workers = {name: worker_summary(rs) for name, rs in sorted(by_worker.items())}
    arch: dict[str, list[str]] = defaultdict(list)
    free_runs = any(split_variant(name)[1] == "free" for name in workers)
    for name, w in workers.items():
        if free_runs and split_variant(name)[1] != "free":
            continue  # a constrained variant is not one more model of its architecture
        arch[w.architecture].append(name)
    return Summary(
        schema_version=SCHEMA_VERSION,
        generated=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        suites=sorted(set(suites) | {r.suite for r in records}),
        results=len(records),
        metrics=METRIC_HELP,
        workers=workers,
        architectures={
            a: architecture_summary(by_worker, names) for a, names in sorted(arch.items())
        },
        comparisons=comparisons(by_worker, dict(arch)),
        bfcl=bfcl_summary(records),
        decoding=decoding_summary(records),
    )
