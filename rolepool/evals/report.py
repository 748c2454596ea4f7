"""The eval report in three forms, all from `summary.json` (plus the result lines for the figures
and the examples of failures): a terminal table, `report.md`, and `report.html` with the figures.

The rows all three show are built in `report_tables`; this module lays out the terminal and
Markdown forms and writes every file, so imports run one way: report -> report_html ->
report_tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from rolepool.evals.bfcl.groups import (
    BFCL_HEADERS,
    BFCL_NOTE,
    bfcl_architecture_rows,
    bfcl_rows,
)
from rolepool.evals.decoding import ARCH_HEADERS as DECODING_ARCH_HEADERS
from rolepool.evals.decoding import HEADERS as DECODING_HEADERS
from rolepool.evals.decoding import NOTE as DECODING_NOTE
from rolepool.evals.decoding import decoding_rows
from rolepool.evals.report_html import render_html
from rolepool.evals.report_tables import (
    HEADERS,
    arch_rows,
    category_rows,
    expert_rows,
    key_findings,
    role_rows,
    worker_rows,
)
from rolepool.evals.result_line import ResultLine
from rolepool.evals.summary_types import Summary


def terminal_report(summary: Summary, paths: dict[str, Path] | None = None) -> Group:
    table = Table(
        title=f"rolepool eval: {', '.join(summary.suites)} "
        f"({summary.results} results; rates with Wilson 95% intervals)"
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


def markdown_report(summary: Summary) -> str:
    out = [
        f"# rolepool eval: {_md_cell(', '.join(summary.suites))}",
        "",
        f"{summary.results} results, generated {summary.generated}. Rates with Wilson "
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
    if summary.bfcl is not None:
        out += ["", "## BFCL, as the leaderboard groups it", "", summary.bfcl.weighting + "."]
        out += ["", BFCL_NOTE, ""]
        out += _md_table(BFCL_HEADERS, bfcl_rows(summary.bfcl))
        out += ["", "BFCL groups by architecture (mean of the workers' accuracies):", ""]
        out += _md_table(["architecture", "group", "BFCL"], bfcl_architecture_rows(summary.bfcl))
    if summary.decoding is not None:
        workers, archs = decoding_rows(summary.decoding)
        out += ["", "## Free vs constrained decoding", "", DECODING_NOTE, ""]
        out += _md_table(DECODING_HEADERS, workers)
        out += ["", "By architecture:", ""] + _md_table(DECODING_ARCH_HEADERS, archs)
    out += ["", "## All comparisons", ""] + [f"- {_md_cell(c.text)}" for c in summary.comparisons]
    out += [
        "",
        "Figures: accuracy_by_role.png, latency.png, expert_load_*.png; the HTML report "
        "holds them all.",
        "",
    ]
    return "\n".join(out)


def write_reports(
    directory: Path, summary: Summary, records: Sequence[ResultLine]
) -> dict[str, Path]:
    """summary.json, report.md, the PNG figures and report.html; returns their paths."""
    from rolepool.evals.plots import all_figures, save_figures  # matplotlib only when drawing

    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "summary": directory / "summary.json",
        "markdown": directory / "report.md",
        "html": directory / "report.html",
    }
    paths["summary"].write_text(summary.to_json())
    paths["markdown"].write_text(markdown_report(summary))
    figures = all_figures(records, summary)
    save_figures(figures, directory)
    paths["html"].write_text(render_html(summary, records, figures), encoding="utf-8")
    return paths
