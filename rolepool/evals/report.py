"""The eval report in three forms, all from `summary.json` (plus the result lines for the figures
and the examples of failures): a terminal table, `report.md`, and `report.html` with the figures.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

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


def terminal_report(summary: dict[str, Any], paths: dict[str, Path] | None = None) -> Group:
    table = Table(
        title=f"rolepool eval: {', '.join(summary['suites'])} "
        f"({summary['results']} results; rates with Wilson 95% intervals)"
    )
    for header in HEADERS:
        table.add_column(
            header, no_wrap=True, justify="left" if header in ("worker", "arch") else "right"
        )
    for row in worker_rows(summary):
        table.add_row(*row)
    parts: list[Any] = [table]
    for line in key_findings(summary):
        parts.append(Text("• " + line))
    if paths:
        parts.append(Text(""))
        for label, path in paths.items():
            parts.append(Text(f"{label}: {path}"))
    return Group(*parts)


def _md_cell(text: str) -> str:
    """Text from suites and models is data, not markup: escape what Markdown would act on."""
    out = text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    for ch in "`*_[]<>#":
        out = out.replace(ch, "\\" + ch)
    return out


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
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


def markdown_report(summary: dict[str, Any]) -> str:
    out = [
        f"# rolepool eval: {_md_cell(', '.join(summary['suites']))}",
        "",
        f"{summary['results']} results, generated {summary['generated']}. Rates with Wilson "
        "95% intervals; latency is the model time of a case (batching wait included); tok/s is "
        "completion tokens per second while the worker had cases in flight.",
        "",
        "## Workers",
        "",
    ]
    out += _md_table(HEADERS, worker_rows(summary))
    out += ["", "## Findings", ""] + [f"- {_md_cell(t)}" for t in key_findings(summary)]
    out += ["", "## By role", ""]
    out += _md_table(
        ["worker", "role", "n", "exact", "name", "schema", "no-call", "p50"], role_rows(summary)
    )
    out += ["", "## By category", ""]
    out += _md_table(
        ["worker", "category", "n", "exact", "name", "schema 1st", "schema"], category_rows(summary)
    )
    out += ["", "## By architecture (mean of the models' rates, sd across models)", ""]
    out += _md_table(["architecture", "metric", "mean", "sd", "per model"], arch_rows(summary))
    experts = expert_rows(summary)
    if experts:
        out += [
            "",
            "## MoE expert load by role",
            "",
            "Entropy normalised to 1 = even; max/mean 1 = even; idle = experts under a tenth "
            "of an even share in some layer; JSD between roles' expert distributions "
            "(bits, 0 = same routing).",
            "",
        ]
        out += _md_table(["worker", "role", "entropy", "min entropy", "max/mean", "idle"], experts)
    out += ["", "## All comparisons", ""] + [
        f"- {_md_cell(c['text'])}" for c in summary["comparisons"]
    ]
    out += [
        "",
        "Figures: accuracy_by_role.png, latency.png, expert_load_*.png; the HTML report "
        "holds them all.",
        "",
    ]
    return "\n".join(out)


def write_reports(
    directory: Path, summary: dict[str, Any], records: Sequence[dict[str, Any]]
) -> dict[str, Path]:
    """summary.json, report.md, the PNG figures and report.html; returns their paths."""
    from rolepool.evals.plots import all_figures, save_figures
    from rolepool.evals.report_html import render_html

    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "summary": directory / "summary.json",
        "markdown": directory / "report.md",
        "html": directory / "report.html",
    }
    paths["summary"].write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    paths["markdown"].write_text(markdown_report(summary))
    figures = all_figures(records, summary)
    save_figures(figures, directory)
    paths["html"].write_text(render_html(summary, records, figures), encoding="utf-8")
    return paths
