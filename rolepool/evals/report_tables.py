"""The tables and findings every form of the eval report shows (terminal, Markdown, HTML), as
rows of strings built from `summary.json`; each report module only lays them out.
"""

from __future__ import annotations

from typing import Any

COLUMNS = (
    ("exact_acc", "exact"),
    ("name_acc", "name"),
    ("json_valid", "json"),
    ("schema_valid", "schema"),
    ("schema_valid_first_try", "schema 1st"),
    ("no_call_acc", "no-call"),
)


def pct(cell: dict[str, Any] | None, interval: bool = True) -> str:
    """`41.7% [33.2–50.7]`, or `–` when the metric applies to no case."""
    if not cell or cell.get("rate") is None:
        return "–"
    text = f"{100 * cell['rate']:.1f}%"
    if interval:
        lo, hi = cell["ci95"]
        text += f" [{100 * lo:.0f}–{100 * hi:.0f}]"
    return text


def _secs(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}s"


def _num(value: float | None, fmt: str = ".0f") -> str:
    return "–" if value is None else format(value, fmt)


def worker_rows(summary: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, w in summary["workers"].items():
        o = w["overall"]
        rows.append(
            [name, w["architecture"], str(o["n"])]
            + [pct(o.get(m)) for m, _ in COLUMNS]
            + [
                _secs(o["latency"]["p50"]),
                _secs(o["latency"]["p95"]),
                _num(w["throughput"]["tokens_per_s"]),
            ]
        )
    return rows


HEADERS = ["worker", "arch", "n", *(h for _, h in COLUMNS), "p50", "p95", "tok/s"]


def key_findings(summary: dict[str, Any]) -> list[str]:
    """The comparisons worth a sentence: every architecture one on exact_acc, and the worker
    pairs whose difference is detectable after the multiple-comparison adjustment."""
    lines = [
        c["text"]
        for c in summary["comparisons"]
        if c["kind"] == "architectures" and c["metric"] == "exact_acc"
    ]
    lines += [
        c["text"]
        for c in summary["comparisons"]
        if c["kind"] == "workers"
        and c["verdict"] not in ("no detectable difference", "no shared cases")
    ]
    for name, w in summary["workers"].items():
        o = w["overall"]
        if o["worker_errors"]:
            lines.append(
                f"{name}: {o['worker_errors']} of {o['n']} cases failed in the worker (counted "
                "as failures; the same command run again retries them)."
            )
        if o.get("refused"):
            lines.append(
                f"{name}: {o['refused']} of {o['n']} cases did not fit the model (a prompt over "
                "its context; counted as failures, not retried)."
            )
    pairs = [c for c in summary["comparisons"] if c["kind"] == "workers"]
    quiet = sum(c["verdict"] == "no detectable difference" for c in pairs)
    if pairs and quiet:
        lines.append(
            f"{quiet} of {len(pairs)} worker-pair comparisons: no detectable difference "
            "(exact McNemar, Holm-adjusted; all listed in the report)."
        )
    return lines


def role_rows(summary: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, w in summary["workers"].items():
        for role, g in w["by_role"].items():
            rows.append(
                [
                    name,
                    role,
                    str(g["n"]),
                    pct(g.get("exact_acc")),
                    pct(g.get("name_acc")),
                    pct(g.get("schema_valid")),
                    pct(g.get("no_call_acc")),
                    _secs(g["latency"]["p50"]),
                ]
            )
    return rows


def category_rows(summary: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, w in summary["workers"].items():
        for cat, g in w["by_category"].items():
            rows.append(
                [
                    name,
                    cat,
                    str(g["n"]),
                    pct(g.get("exact_acc")),
                    pct(g.get("name_acc")),
                    pct(g.get("schema_valid_first_try")),
                    pct(g.get("schema_valid")),
                ]
            )
    return rows


def arch_rows(summary: dict[str, Any]) -> list[list[str]]:
    rows = []
    for arch, a in summary["architectures"].items():
        o = a["overall"]
        for metric in ("exact_acc", "name_acc", "schema_valid", "no_call_acc"):
            cell = o[metric]
            sd = "–" if cell["sd"] is None else f"{cell['sd']:.3f}"
            per = ", ".join(f"{n} {_num(r, '.3f')}" for n, r in cell["per_model"].items())
            rows.append([arch, metric, _num(cell["rate"], ".3f"), sd, per])
    return rows


def expert_rows(summary: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, w in summary["workers"].items():
        health = w.get("expert_health")
        if not health:
            continue
        for role, h in health["by_role"].items():
            rows.append(
                [
                    name,
                    role,
                    f"{h['entropy_mean']:.3f}",
                    f"{h['entropy_min']:.3f}",
                    f"{h['max_over_mean']:.2f}",
                    str(len(h["idle_experts"])),
                ]
            )
        for p in health["divergence"]["pairs"]:
            rows.append([name, f"{p['a']} ↔ {p['b']}", f"JSD {p['jsd_mean']:.4f}", "", "", ""])
    return rows
