"""The tables and findings every form of the eval report shows (terminal, Markdown, HTML), as
rows of strings built from the `Summary`; each report module only lays them out.
"""

from __future__ import annotations

from collections.abc import Callable

from rolepool.evals.summary_types import (
    ArchitectureComparison,
    GroupStats,
    Rate,
    Summary,
    WorkerComparison,
    WorkerSummary,
)

COLUMNS = (
    ("exact_acc", "exact"),
    ("name_acc", "name"),
    ("json_valid", "json"),
    ("schema_valid", "schema"),
    ("schema_valid_first_try", "schema 1st"),
    ("no_call_acc", "no-call"),
)


def pct(cell: Rate | None, interval: bool = True) -> str:
    """`41.7% [33.2–50.7]`, or `–` when the metric applies to no case."""
    if cell is None or cell.rate is None:
        return "–"
    text = f"{100 * cell.rate:.1f}%"
    if interval:
        lo, hi = cell.ci95
        text += f" [{100 * lo:.0f}–{100 * hi:.0f}]"
    return text


def _secs(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}s"


def _num(value: float | None, fmt: str = ".0f") -> str:
    return "–" if value is None else format(value, fmt)


def worker_rows(summary: Summary) -> list[list[str]]:
    rows = []
    for name, w in summary.workers.items():
        o = w.overall
        rows.append(
            [name, w.architecture, str(o.n)]
            + [pct(o.cell(m)) for m, _ in COLUMNS]
            + [_secs(o.latency.p50), _secs(o.latency.p95), _num(w.throughput.tokens_per_s)]
        )
    return rows


HEADERS = ["worker", "arch", "n", *(h for _, h in COLUMNS), "p50", "p95", "tok/s"]


def worker_pairs(summary: Summary) -> list[WorkerComparison]:
    return [c for c in summary.comparisons if isinstance(c, WorkerComparison)]


def architecture_pairs(summary: Summary) -> list[ArchitectureComparison]:
    return [c for c in summary.comparisons if isinstance(c, ArchitectureComparison)]


def key_findings(summary: Summary) -> list[str]:
    """The comparisons worth a sentence: every architecture one on exact_acc, and the worker
    pairs whose difference is detectable after the multiple-comparison adjustment."""
    pairs = worker_pairs(summary)
    lines = [c.text for c in architecture_pairs(summary) if c.metric == "exact_acc"]
    lines += [
        c.text for c in pairs if c.verdict not in ("no detectable difference", "no shared cases")
    ]
    for name, w in summary.workers.items():
        o = w.overall
        if o.worker_errors:
            lines.append(
                f"{name}: {o.worker_errors} of {o.n} cases failed in the worker (counted "
                "as failures; the same command run again retries them)."
            )
        if o.refused:
            lines.append(
                f"{name}: {o.refused} of {o.n} cases did not fit the model (a prompt over "
                "its context; counted as failures, not retried)."
            )
    quiet = sum(c.verdict == "no detectable difference" for c in pairs)
    if pairs and quiet:
        lines.append(
            f"{quiet} of {len(pairs)} worker-pair comparisons: no detectable difference "
            "(exact McNemar, Holm-adjusted; all listed in the report)."
        )
    return lines


def _group_rows(
    summary: Summary,
    groups_of: Callable[[WorkerSummary], dict[str, GroupStats]],
    metrics: tuple[str, ...],
    latency: bool,
) -> list[list[str]]:
    rows = []
    for name, w in summary.workers.items():
        for group, g in groups_of(w).items():
            row = [name, group, str(g.n), *(pct(g.cell(m)) for m in metrics)]
            rows.append(row + [_secs(g.latency.p50)] if latency else row)
    return rows


def role_rows(summary: Summary) -> list[list[str]]:
    metrics = ("exact_acc", "name_acc", "schema_valid", "no_call_acc")
    return _group_rows(summary, lambda w: w.by_role, metrics, latency=True)


def category_rows(summary: Summary) -> list[list[str]]:
    metrics = ("exact_acc", "name_acc", "schema_valid_first_try", "schema_valid")
    return _group_rows(summary, lambda w: w.by_category, metrics, latency=False)


def arch_rows(summary: Summary) -> list[list[str]]:
    rows = []
    for arch, a in summary.architectures.items():
        for metric in ("exact_acc", "name_acc", "schema_valid", "no_call_acc"):
            cell = a.overall.cell(metric)
            sd = "–" if cell.sd is None else f"{cell.sd:.3f}"
            per = ", ".join(f"{n} {_num(r, '.3f')}" for n, r in cell.per_model.items())
            rows.append([arch, metric, _num(cell.rate, ".3f"), sd, per])
    return rows


def expert_rows(summary: Summary) -> list[list[str]]:
    rows = []
    for name, w in summary.workers.items():
        health = w.expert_health
        if health is None:
            continue
        for role, h in health.by_role.items():
            rows.append(
                [
                    name,
                    role,
                    f"{h.entropy_mean:.3f}",
                    f"{h.entropy_min:.3f}",
                    f"{h.max_over_mean:.2f}",
                    str(len(h.idle_experts)),
                ]
            )
        for p in health.divergence.pairs:
            rows.append([name, f"{p.a} ↔ {p.b}", f"JSD {p.jsd_mean:.4f}", "", "", ""])
    return rows
